"""The MQTT link at paho's level: how it writes, how much it keeps in flight, how large a packet
is, and TLS. `bridge.mqtt.link.MqttLink` is the only user; aiomqtt's internals are touched here
(`client._client`) because aiomqtt exposes neither paho's write callback nor the CONNACK."""

from __future__ import annotations

import asyncio
import ssl
from collections import deque
from collections.abc import Callable, Iterator
from typing import Any

import aiomqtt
from paho.mqtt.client import DISCONNECT, PUBLISH
from paho.mqtt.matcher import MQTTMatcher
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config import MqttConfig

INFLIGHT = 256  # publishes awaiting their acknowledgement at most
# MQTT 3.1.1 has no Receive Maximum, but brokers bound the QoS 2 messages they take in flight
# (mosquitto 20, HiveMQ 10) and refuse the rest: stay under the smallest common default.
QOS2_WINDOW_V311 = 10
JOIN_LIMIT = 65_536  # bytes per joined packet
RETAIN_NOT_SUPPORTED = 0x9A  # MQTT 5 reason code: CONNACK refusing a retained will


def write_from_loop(client: aiomqtt.Client) -> None:
    """Once `client` is connected: paho writes from the event loop itself (`_LoopWriter`)."""
    paho = client._client
    paho.on_socket_register_write = _LoopWriter(paho, paho.on_socket_register_write)


async def until_disconnected(client: aiomqtt.Client) -> None:
    """Wait for the connection to end, then raise why (an `aiomqtt.MqttError`), as aiomqtt's
    message iterator does; the link takes messages from paho's callback instead."""
    ended = client._disconnected
    await asyncio.wait([ended])  # not `await ended`: cancelling this must not cancel it
    exc = ended.exception()
    raise exc if isinstance(exc, aiomqtt.MqttError) else aiomqtt.MqttError("disconnected")


def no_topic_callbacks(client: aiomqtt.Client) -> None:
    """paho looks up per-topic callbacks for every message it receives; the link registers
    none. The lookup builds a recursive closure, a reference cycle per message, so a young
    collection found ~28,000 such objects each time and paused the bridge for ~34 ms."""
    client._client._on_message_filtered = _NoTopicCallbacks()  # type: ignore[no-untyped-call]


class _NoTopicCallbacks(MQTTMatcher):
    """A matcher that matches nothing, without building anything."""

    def iter_match(self, topic: str) -> Iterator[Any]:
        return iter(())


class _LoopWriter:
    """paho's `on_socket_register_write` once connected: writes from the event loop itself.

    aiomqtt's callback assumes it may run on paho's connect thread, so it registers a writer
    through `call_soon_threadsafe` for each burst: a self-pipe write and read, two epoll_ctl
    and two extra passes of the loop per reply. On the loop thread a plain `call_soon` does:
    everything queued in one pass goes out in one `loop_write`; only when the socket buffer
    is full does a writer wait for it to drain. On an error, aiomqtt's own callback takes over
    (its writer hits the same error and ends the connection the usual way).
    """

    def __init__(self, paho: Any, fallback: Callable[..., None] | None) -> None:
        self._paho = paho
        self._fallback = fallback
        self._loop = asyncio.get_running_loop()
        self._scheduled = False
        self._sock: Any = None

    def __call__(self, client: Any, userdata: Any, sock: Any) -> None:
        self._sock = sock
        if not self._scheduled:
            self._scheduled = True
            self._loop.call_soon(self._flush)

    def _flush(self) -> None:
        self._scheduled = False
        paho = self._paho
        try:
            coalesce(paho._out_packet)
            paho.loop_write()
        except Exception:
            if self._fallback is not None:
                self._fallback(paho, None, self._sock)
            return
        if paho.want_write() and paho._sock is not None:  # socket buffer full: wait for it
            self._loop.add_writer(paho._sock.fileno(), self._flush)


def coalesce(queue: deque[Any]) -> None:
    """Join the packets paho has queued so that one `send` carries many.

    paho writes its queue one packet per `send`, and on loopback each `send` also does the
    receiving side's TCP work and wakes the broker. When several packets wait in one pass of
    the loop (events from many channels, PUBACKs for a batch of requests), they now go out in
    one. A joined packet ends at a packet paho acts on once it is written (a QoS 0 PUBLISH:
    `on_publish`; DISCONNECT: the close) and takes its command, id and info, so paho does the
    same when the joined packet is written; the packets before it need nothing. A run holds
    at most `JOIN_LIMIT` bytes, so a packet that large goes out as it is (never copied), and a
    backlog in pieces. QoS 0 publishes are not joined with each other (each one ends a run).
    """
    if len(queue) < 2:
        return
    joined: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    size = 0
    for packet in queue:
        if run and size + packet["to_process"] > JOIN_LIMIT:
            joined.append(_joined(run, size))
            run, size = [], 0
        run.append(packet)
        size += packet["to_process"]
        if _acted_on(packet):
            joined.append(_joined(run, size))
            run, size = [], 0
    if run:
        joined.append(_joined(run, size))
    if len(joined) < len(queue):
        queue.clear()
        queue.extend(joined)


def _acted_on(packet: dict[str, Any]) -> bool:
    command: int = packet["command"] & 0xF0
    return (command == PUBLISH and packet["qos"] == 0) or command == DISCONNECT


def _joined(run: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """One packet for paho's queue with the bytes of `run` still to send, and the identity of
    its last packet."""
    if len(run) == 1:
        return run[0]
    data = b"".join(p["packet"][p["pos"] :] if p["pos"] else p["packet"] for p in run)
    return {**run[-1], "packet": data, "pos": 0, "to_process": size}


def publish_size(
    topic: str, payload: bytes, *, qos: int, v5: bool, correlation: bytes | None = None
) -> int:
    """Bytes of the PUBLISH packet for this message (MQTT 3.3), as a broker counts them."""
    properties = 3 + len(correlation) if correlation is not None else 0  # id, length, data
    body = 2 + len(topic.encode("utf-8")) + (2 if qos else 0) + len(payload)
    if v5:
        body += _varint_size(properties) + properties
    return 1 + _varint_size(body) + body


def _varint_size(value: int) -> int:
    return 1 if value < 128 else 2 if value < 16_384 else 3 if value < 2_097_152 else 4


def window_for(protocol: int, qos: int, connack: Properties | None) -> int:
    """How many publishes may await their acknowledgement: never more than the broker's
    Receive Maximum (MQTT 5, 3.3.4: a broker may disconnect a client that sends more; 65,535
    when it sends none), and for QoS 2 over 3.1.1 a bound brokers commonly keep."""
    if protocol == 5:
        peer = getattr(connack, "ReceiveMaximum", None) if connack is not None else None
        return max(1, min(INFLIGHT, peer if isinstance(peer, int) else 65_535))
    return QOS2_WINDOW_V311 if qos == 2 else INFLIGHT


def close_socket(client: aiomqtt.Client) -> None:
    """Close the socket of an attempt that failed or was cancelled before CONNACK.

    aiomqtt leaves it open when waiting for CONNACK times out or is cancelled (e.g. a hung
    broker that accepts TCP and never answers): one leaked socket per attempt. Paho's own
    close also unregisters it from the event loop.
    """
    paho = client._client
    paho._sock_close()


def connect_properties(cfg: MqttConfig) -> Properties | None:
    if not cfg.session_expiry:
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = cfg.session_expiry
    return props


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """TLS for `mqtts://`: CA and client certificate; `tls_insecure` skips verification."""
    ctx = ssl.create_default_context(cafile=str(cfg.tls_ca_file) if cfg.tls_ca_file else None)
    ctx.sslsocket_class = _ClosingSSLSocket
    if cfg.tls_cert_file:
        key = str(cfg.tls_key_file) if cfg.tls_key_file else None
        ctx.load_cert_chain(str(cfg.tls_cert_file), key)
    if cfg.tls_insecure:
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    return ctx


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho does not, so every refused attempt (a
    server certificate that does not verify) would leak a socket until garbage collection."""

    def do_handshake(self, block: bool = False) -> None:
        """The TLS handshake; the socket is closed if it fails."""
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise
