"""`bridge.mqtt.transport.coalesce` against paho itself, the oracle: two paho clients on real socket
pairs queue the same packets; one writes its queue as paho does, the other joins it first. The
broker's end must read the same bytes, paho must report the same publishes and end the same
way, and the joined side must need fewer sends. Small socket buffers make writes partial, so
joining also meets packets paho had half written; over TLS, a write the socket could not take
is tried again with the joined bytes (the same start, perhaps more after it)."""

from __future__ import annotations

import socket
import ssl
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from typing import Any

import trustme
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion

from bridge.mqtt.transport import JOIN_LIMIT, coalesce

# (kind, topic, payload size, qos): what a test queues, in order
Op = tuple[str, str, int, int]
publish = st.tuples(
    st.just("publish"),
    st.sampled_from(["a", "b/c", "events/x"]),
    st.one_of(st.integers(0, 300), st.integers(20_000, 90_000)),
    st.integers(0, 2),
)
puback = st.tuples(st.just("puback"), st.just(""), st.integers(1, 65_535), st.just(1))
ops = st.lists(
    st.one_of(publish, puback, st.just(("subscribe", "s/#", 0, 1))), min_size=1, max_size=30
)


class Side:
    """A paho client whose writes the test drives; the broker's end of its socket pair."""

    def __init__(self, *, v5: bool, join: bool, tls: bool = False) -> None:
        protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
        self.paho = Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.join = join
        self.seen: list[Any] = []
        self.infos: list[Any] = []
        self.sends = 0
        self.paho.on_publish = lambda _c, _u, mid, *_: self.seen.append(("published", mid))
        self.paho.on_disconnect = lambda *_: self.seen.append("disconnected")
        self.paho.on_socket_register_write = lambda *_: None  # queue only: the test writes
        self.paho.max_inflight_messages_set(0)  # as the link sets it: it keeps its own window
        self.ours, self.broker = socket.socketpair()
        for sock in (self.ours, self.broker):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        if tls:
            self.ours, self.broker = _tls_pair(self.ours, self.broker)
        for sock in (self.ours, self.broker):
            sock.setblocking(False)
        self.paho._sock = self.ours
        sock_send = self.paho._sock_send

        def counted(buf: Any) -> int:
            self.sends += 1
            return int(sock_send(buf))

        self.paho._sock_send = counted  # type: ignore[method-assign]
        self.received = b""

    def queue(self, op: Op) -> None:
        kind, topic, n, qos = op
        if kind == "publish":
            self.infos.append(self.paho.publish(topic, bytes([n % 251]) * n, qos))
        elif kind == "puback":
            self.paho._send_puback(n)
        elif kind == "subscribe":
            self.paho.subscribe(topic, qos)
        else:
            self.paho.disconnect()

    def write_all(self) -> None:
        """Write until paho's queue is empty, reading the broker's end in small bites between
        writes (so that sends are partial)."""
        for _ in range(100_000):
            if self.join:
                coalesce(self.paho._out_packet)
            self.paho.loop_write()
            self.read(4096)
            if not self.paho._out_packet or self.paho._sock is None:
                break
        self.read(1 << 24)

    def read(self, limit: int) -> None:
        with suppress(BlockingIOError, ConnectionResetError, ssl.SSLWantReadError, ssl.SSLEOFError):
            while limit > 0 and (got := self.broker.recv(min(limit, 65_536))):
                self.received += got
                limit -= len(got)

    def close(self) -> None:
        self.ours.close()
        self.broker.close()


def _tls_pair(client: socket.socket, server: socket.socket) -> tuple[Any, Any]:
    """The two ends of a socket pair with TLS between them (a throwaway CA)."""
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("broker.test").configure_cert(server_ctx)
    client_ctx = ssl.create_default_context()
    ca.configure_trust(client_ctx)
    with ThreadPoolExecutor(1) as pool:
        accepted = pool.submit(server_ctx.wrap_socket, server, server_side=True)
        ours = client_ctx.wrap_socket(client, server_hostname="broker.test")
        return ours, accepted.result(10)


@contextmanager
def sides(*, v5: bool, tls: bool = False) -> Iterator[tuple[Side, Side]]:
    stock, joined = Side(v5=v5, join=False, tls=tls), Side(v5=v5, join=True, tls=tls)
    try:
        yield stock, joined
    finally:
        stock.close()
        joined.close()


fuzz = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(ops, st.booleans(), st.booleans(), st.integers(0, 29), st.booleans())
def test_joined_writes_put_the_same_bytes_on_the_wire_as_paho(
    queued: list[Op], v5: bool, disconnect: bool, written_first: int, tls: bool
) -> None:
    """Some packets may already be written (one by one, as paho does) before more are queued
    and the rest is joined; a DISCONNECT may come last."""
    if disconnect:
        queued = [*queued, ("disconnect", "", 0, 0)]
    with sides(v5=v5, tls=tls) as (stock, joined):
        for side in (stock, joined):
            for i, op in enumerate(queued):
                side.queue(op)
                if i == written_first:  # half of a packet out, before the rest is queued
                    side.paho.loop_write()
                    side.read(1000)
            side.write_all()
        assert joined.received == stock.received
        assert joined.seen == stock.seen
        assert [i.is_published() for i in joined.infos] == [i.is_published() for i in stock.infos]
        assert (joined.paho._sock is None) == (stock.paho._sock is None) == disconnect
        assert joined.sends <= stock.sends


def test_small_packets_go_out_in_one_send_and_a_qos0_publish_ends_a_run() -> None:
    with sides(v5=True) as (stock, joined):
        for side in (stock, joined):
            for mid in range(1, 41):
                side.queue(("puback", "", mid, 1))
                side.queue(("publish", "events/x", 100, 1))
            side.queue(("publish", "events/y", 10, 0))  # paho calls on_publish once it is out
            side.queue(("puback", "", 99, 1))
            side.write_all()
        assert joined.received == stock.received
        assert stock.sends >= 82  # a packet each, and partial sends again
        assert joined.sends <= 4  # the run up to the QoS 0 publish (5 KB, maybe in two
        # sends with these 4 KB buffers), then the last PUBACK
        assert joined.seen == stock.seen == [("published", 41)]


def test_a_run_stops_at_the_join_limit_and_a_large_packet_is_not_copied() -> None:
    big = _out(bytearray(b"x" * (JOIN_LIMIT + 10)))
    halves = [_out(bytes([c]) * (JOIN_LIMIT // 2)) for c in b"bc"]
    queue: deque[Any] = deque([_out(b"a" * 100), big, *halves, _out(b"d" * 10)])
    before = b"".join(p["packet"] for p in queue)
    coalesce(queue)
    assert [p["to_process"] for p in queue] == [100, JOIN_LIMIT + 10, JOIN_LIMIT, 10]
    assert queue[1] is big  # after small packets, still sent as it is
    assert b"".join(p["packet"] for p in queue) == before


def _out(data: bytes | bytearray) -> dict[str, Any]:
    return {
        "command": 0x40,
        "mid": 0,
        "qos": 1,
        "pos": 0,
        "to_process": len(data),
        "packet": data,
        "info": None,
    }
