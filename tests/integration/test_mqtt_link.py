"""The MQTT link against a real mosquitto: its write path (a broker that stops reading, the
broker's Receive Maximum, messages no broker takes, close()) and its inbox (backpressure)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import aiomqtt
import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config import MqttConfig
from bridge.core.inbound import Inbound, Inbox
from bridge.core.topics import Topics
from bridge.mqtt.fastpath import VERIFIED, enabled, paho_version
from bridge.mqtt.link import MqttLink
from bridge.mqtt.transport import publish_size, window_for
from tests.support.broker import Broker
from tests.support.fastpath import fast_path_setting
from tests.support.garbage import cyclic_garbage, named

SIZE = 64 * 1024  # 256 in flight of these is far more than both socket buffers hold


class _Ignore:
    """An inbox that takes everything and does nothing with it."""

    def offer(self, _: Inbound) -> bool:
        return True

    async def room(self) -> None:
        return None

    def refuse(self, _: Inbound) -> None:
        raise AssertionError("an inbox that takes everything refuses nothing")

    def keeps_order(self, _: Inbound) -> bool:
        return False


class _OneAtATime:
    """An inbox that holds one message until `release()`: full meanwhile."""

    def __init__(self) -> None:
        self.taken: list[Inbound] = []
        self.refused: list[Inbound] = []
        self.held = False
        self._free = asyncio.Event()

    def offer(self, msg: Inbound) -> bool:
        if self.held:
            return False
        self.taken.append(msg)
        self.held = True
        self._free.clear()
        return True

    async def room(self) -> None:
        await self._free.wait()

    def refuse(self, msg: Inbound) -> None:
        self.refused.append(msg)

    def keeps_order(self, _: Inbound) -> bool:
        return False

    def release(self) -> None:
        self.held = False
        self._free.set()


@contextlib.asynccontextmanager
async def running_link(
    broker: Broker, base: str, inbox: Inbox | None = None, waiting: int = 10_000, **mqtt: Any
) -> AsyncIterator[MqttLink]:
    """A connected link on `broker`; closed (bounded) and its task awaited at the end."""
    config = MqttConfig(
        url=broker.url, base_topic=base, **{"fast_path": fast_path_setting(), **mqtt}
    )
    subscriptions = [f"{base}/bridge/request/#"]
    link = MqttLink(config, Topics(base), subscriptions=subscriptions, waiting=waiting)
    runner = asyncio.create_task(link.run(inbox or _Ignore()))
    try:
        await asyncio.wait_for(link.connected.wait(), 10)
        yield link
    finally:
        await link.close(grace=5)  # a second close() (after the test's own) changes nothing
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(runner, 10)


@contextlib.contextmanager
def stopped(broker: Broker) -> Iterator[None]:
    """The broker frozen (SIGSTOP): it reads nothing and acknowledges nothing until the end."""
    assert broker.proc is not None
    os.kill(broker.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(broker.proc.pid, signal.SIGCONT)


async def _collect(sub: aiomqtt.Client, count: int, timeout: float = 15) -> list[bytes]:
    got: list[bytes] = []
    async with asyncio.timeout(timeout):
        async for message in sub.messages:
            assert isinstance(message.payload, bytes)
            got.append(message.payload)
            if len(got) == count:
                return got
    return got


async def test_a_stalled_broker_gets_every_message_once_in_order(
    own_broker: Broker, base: str
) -> None:
    async with aiomqtt.Client("127.0.0.1", own_broker.port) as sub:
        await sub.subscribe(f"{base}/load/#", qos=1)
        async with running_link(own_broker, base) as link:
            with stopped(own_broker):  # it stops reading: the socket fills
                for i in range(400):
                    link.publish(f"{base}/load/{i}", i.to_bytes(4, "big") * (SIZE // 4))
                await asyncio.sleep(0.5)
                assert link.outbox_depth > 0  # the window is full, the rest waits in order
            payloads = await _collect(sub, 400)
    assert all(len(p) == SIZE for p in payloads)
    assert [int.from_bytes(p[:4], "big") for p in payloads] == list(range(400))


async def test_a_full_inbox_gets_every_message_once_in_order(own_broker: Broker, base: str) -> None:
    """What arrives while the inbox is full waits in the link and is offered oldest first,
    with the MQTT 5 properties the dispatcher needs."""
    inbox = _OneAtATime()
    async with running_link(own_broker, base, inbox) as link:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = b"c"
        props.ResponseTopic = f"{base}/replies"
        v5 = aiomqtt.ProtocolVersion.V5
        async with aiomqtt.Client("127.0.0.1", own_broker.port, protocol=v5) as pub:

            async def send(i: int) -> None:
                await pub.publish(f"{base}/bridge/request/x/{i}", b"%d" % i, 1, properties=props)

            for i in range(20):
                await send(i)
            await _until(lambda: link.inbound_waiting == 19)
            inbox.held = False  # room again, but the waiting ones go first: not this one
            await send(20)
            await _until(lambda: len(inbox.taken) + link.inbound_waiting == 21)
        async with asyncio.timeout(10):
            while len(inbox.taken) < 21:
                inbox.release()
                await asyncio.sleep(0.001)
        assert link.connected.is_set()
    assert [m.topic.rsplit("/", 1)[1] for m in inbox.taken] == [str(i) for i in range(21)]
    assert [m.payload for m in inbox.taken] == [b"%d" % i for i in range(21)]
    assert {(m.qos, m.correlation_data, m.response_topic) for m in inbox.taken} == {
        (1, b"c", f"{base}/replies")
    }


async def test_what_waits_for_room_is_offered_while_the_broker_is_down(
    own_broker: Broker, base: str
) -> None:
    """The messages were acknowledged to the broker: they must not wait for a reconnect."""
    inbox = _OneAtATime()
    pub = aiomqtt.Client("127.0.0.1", own_broker.port)
    async with running_link(own_broker, base, inbox) as link:
        async with pub:
            for i in range(5):
                await pub.publish(f"{base}/bridge/request/x/{i}", b"%d" % i, 1)
        await _until(lambda: link.inbound_waiting == 4)
        own_broker.kill()
        await _until(lambda: not link.connected.is_set())
        async with asyncio.timeout(5):
            while len(inbox.taken) < 5:
                inbox.release()
                await asyncio.sleep(0.001)
        assert [m.payload for m in inbox.taken] == [b"%d" % i for i in range(5)]
        assert not link.connected.is_set()


class _Membership(_OneAtATime):
    """One at a time; messages on `.../member/...` keep their place in line."""

    def keeps_order(self, msg: Inbound) -> bool:
        return "/member/" in msg.topic


async def test_a_message_that_keeps_its_place_is_never_refused_nor_passed(
    own_broker: Broker, base: str
) -> None:
    """A membership message arriving with the line full waits in it, and so do the requests
    behind it (a refusal would judge their owner before it is applied), up to twice the bound."""
    inbox = _Membership()
    pub = aiomqtt.Client("127.0.0.1", own_broker.port)
    async with running_link(own_broker, base, inbox, waiting=3) as link, pub:
        for i in range(4):
            await pub.publish(f"{base}/bridge/request/x/{i}", b"%d" % i, 1)
        await pub.publish(f"{base}/bridge/request/member/a", b"M", 1)
        for i in range(4, 10):
            await pub.publish(f"{base}/bridge/request/x/{i}", b"%d" % i, 1)
        await _until(lambda: len(inbox.refused) == 4)
        assert link.inbound_waiting == 6
        async with asyncio.timeout(5):
            while len(inbox.taken) < 7:
                inbox.release()
                await asyncio.sleep(0.001)
    assert [m.payload for m in inbox.taken] == [b"0", b"1", b"2", b"3", b"M", b"4", b"5"]
    assert [m.payload for m in inbox.refused] == [b"6", b"7", b"8", b"9"]


async def test_beyond_its_bound_the_backlog_has_the_inbox_refuse(
    own_broker: Broker, base: str
) -> None:
    inbox = _OneAtATime()
    pub = aiomqtt.Client("127.0.0.1", own_broker.port)
    async with running_link(own_broker, base, inbox, waiting=3) as link, pub:
        for i in range(8):
            await pub.publish(f"{base}/bridge/request/x/{i}", b"%d" % i, 1)
        await _until(lambda: len(inbox.refused) == 4)
        assert link.inbound_waiting == 3
    assert [m.payload for m in inbox.taken] == [b"0"]
    assert [m.payload for m in inbox.refused] == [b"4", b"5", b"6", b"7"]


async def test_receiving_on_the_fast_path_makes_no_reference_cycles(
    own_broker: Broker, base: str
) -> None:
    """paho's per-topic callback lookup built a self-referencing closure per message.

    The fast path is what turns that lookup off, so it is on here whatever the run's setting;
    paho's own code keeps the lookup and its cycles.
    """
    if paho_version() not in VERIFIED:  # the fence: such a paho runs its own code, whatever is set
        assert not enabled(True)
        return
    inbox = _OneAtATime()
    pub = aiomqtt.Client("127.0.0.1", own_broker.port)
    async with running_link(own_broker, base, inbox, fast_path=True), pub:
        with cyclic_garbage() as garbage:
            for i in range(20):
                await pub.publish(f"{base}/bridge/request/x/{i}", b"{}", 1)
                await _until(lambda: bool(inbox.taken))
                inbox.release()
                inbox.taken.clear()
    assert named(garbage, "iter_match.<locals>.rec") == []


async def _until(condition: Callable[[], bool], timeout: float = 10) -> None:
    async with asyncio.timeout(timeout):
        while not condition():
            await asyncio.sleep(0.005)


async def test_close_waits_for_the_puback_of_what_was_sent(own_broker: Broker, base: str) -> None:
    async with running_link(own_broker, base) as link:
        await asyncio.sleep(0.2)  # the birth messages are acknowledged
        with stopped(own_broker):  # no PUBACK can come back
            link.publish(f"{base}/last", b"words")  # handed to paho at once: the outbox is empty
            started = asyncio.get_running_loop().time()
            await link.close(grace=0.5)
            waited = asyncio.get_running_loop().time() - started
    assert waited >= 0.45  # it waited out its grace for the acknowledgement


async def test_an_unpublishable_topic_is_dropped_and_the_link_goes_on(
    own_broker: Broker, base: str
) -> None:
    async with aiomqtt.Client("127.0.0.1", own_broker.port) as sub:
        await sub.subscribe(f"{base}/after", qos=1)
        async with running_link(own_broker, base) as link:
            link.publish(f"{base}/bad/#", b"x")  # paho refuses a wildcard in a topic name
            link.publish(f"{base}/after", b"still here")
            assert await _collect(sub, 1, timeout=5) == [b"still here"]
    assert (link.refused, link.dropped, link.reconnects) == (1, 0, 1)


@pytest.mark.parametrize("protocol", [5, 4])
async def test_qos2_never_overruns_the_broker(own_broker: Broker, base: str, protocol: int) -> None:
    """mosquitto takes 20 QoS 2 messages in flight and refuses the rest (Receive Maximum)."""
    async with aiomqtt.Client("127.0.0.1", own_broker.port) as sub:
        await sub.subscribe(f"{base}/q2/#", qos=2)
        async with running_link(own_broker, base, qos=2, protocol=protocol) as link:
            assert link.window == (20 if protocol == 5 else 10)
            for i in range(1000):
                link.publish(f"{base}/q2/{i}", str(i).encode())
            payloads = await _collect(sub, 1000, timeout=20)
    assert [int(p) for p in payloads] == list(range(1000))


def test_window_follows_the_brokers_receive_maximum() -> None:
    connack = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    connack.ReceiveMaximum = 20
    empty = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    assert window_for(5, 1, connack) == 20
    assert window_for(5, 1, None) == window_for(5, 1, empty) == 256
    assert (window_for(4, 1, None), window_for(4, 2, None), window_for(4, 0, None)) == (
        256,
        10,
        256,
    )


async def test_a_message_over_the_brokers_maximum_packet_size_is_refused(
    tmp_path: Path, base: str
) -> None:
    """Sent anyway, the broker would disconnect the link, and the message, re-sent after every
    reconnect, would do it again forever."""
    broker = Broker(tmp_path, extra="max_packet_size 1000\n")
    broker.start()
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
            await sub.subscribe(f"{base}/size/#", qos=1)
            async with running_link(broker, base) as link:
                topic = f"{base}/size/edge"
                fits = next(n for n in range(2000) if _size(topic, n + 1) > 1000)
                assert _size(topic, fits) == 1000  # the broker's own count decides below
                link.publish(topic, b"x" * (fits + 1))
                link.publish(topic, b"y" * fits)
                assert await _collect(sub, 1, timeout=5) == [b"y" * fits]
                await asyncio.sleep(0.3)
                assert link.connected.is_set()
        assert (link.refused, link.reconnects) == (1, 1)
    finally:
        broker.kill()


def _size(topic: str, payload: int) -> int:
    return publish_size(topic, b"x" * payload, qos=1, v5=True)


@pytest.mark.parametrize("qos", [0, 1])
@pytest.mark.parametrize("protocol", [5, 4])
@pytest.mark.parametrize(("topic", "payload"), [("t", 0), ("a/é/b", 120), ("x" * 300, 20_000)])
@pytest.mark.parametrize("correlation", [None, b"abc"])
def test_publish_size_matches_pahos_encoding(
    qos: int, protocol: int, topic: str, payload: int, correlation: bytes | None
) -> None:
    """paho's own encoder is the oracle: the bytes it would put on the wire."""
    version = paho.MQTTv5 if protocol == 5 else paho.MQTTv311
    client = paho.Client(CallbackAPIVersion.VERSION2, protocol=version)
    packets: list[int] = []
    # paho's encoder without a broker: no public way to get the bytes it would queue
    client._sock = object()  # type: ignore[assignment]  # noqa: SLF001 - "connected": never sends
    client._packet_queue = lambda command, packet, *rest: packets.append(len(packet))  # type: ignore[method-assign,assignment]  # noqa: SLF001
    props = None
    if protocol == 5 and correlation is not None:
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = correlation
    try:
        client._send_publish(1, topic.encode(), b"p" * payload, qos, False, False, None, props)  # noqa: SLF001
    finally:
        client._sock = None  # noqa: SLF001
    v5 = protocol == 5
    expected = publish_size(
        topic, b"p" * payload, qos=qos, v5=v5, correlation=correlation if v5 else None
    )
    assert packets == [expected]


async def test_a_broker_without_retained_messages_gets_everything_unretained(
    tmp_path: Path, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    """mosquitto with `retain_available false` refuses a retained will (0x9A): without the
    adaptation the link could never connect."""
    broker = Broker(tmp_path, extra="retain_available false\n")
    broker.start()
    try:
        async with aiomqtt.Client("127.0.0.1", broker.port) as sub:
            await sub.subscribe(f"{base}/#", qos=1)
            async with running_link(broker, base) as link:
                link.set_retained(f"{base}/kept", b"state")
                payloads = await _collect(sub, 2, timeout=5)  # `online`, then the state
                await asyncio.sleep(0.3)
                assert link.connected.is_set()
        assert payloads == [b'{"state":"online"}', b"state"]
        assert link.reconnects == 1
        assert sum("does not support retained" in r.message for r in caplog.records) == 1
    finally:
        broker.kill()


@pytest.mark.parametrize("fast_path", [True, False])
@pytest.mark.parametrize("protocol", [5, 4])
async def test_both_ways_of_driving_paho_carry_messages_both_ways(
    own_broker: Broker, base: str, fast_path: bool, protocol: int, caplog: pytest.LogCaptureFixture
) -> None:
    """The fast path on and off (paho's own code alone), in one run: requests in, in order,
    with their properties; publishes out, in order, each once."""
    caplog.set_level(logging.INFO, logger="bridge.mqtt.fastpath")
    inbox = _Kept()
    v5 = aiomqtt.ProtocolVersion.V5 if protocol == 5 else aiomqtt.ProtocolVersion.V311
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.CorrelationData = b"c"
    async with aiomqtt.Client("127.0.0.1", own_broker.port, protocol=v5) as peer:
        await peer.subscribe(f"{base}/out/#", qos=1)
        async with running_link(
            own_broker, base, inbox, fast_path=fast_path, protocol=protocol
        ) as link:
            for i in range(300):
                link.publish(f"{base}/out/{i % 3}", b"%d" % i, correlation_data=b"c")
            got = await _collect(peer, 300)
            for i in range(50):
                extra = props if protocol == 5 and i % 2 else None
                await peer.publish(f"{base}/bridge/request/x", b"%d" % i, 1, properties=extra)
            await _until(lambda: len(inbox.taken) == 50)
    said = [r.getMessage() for r in caplog.records if r.name == "bridge.mqtt.fastpath"]
    assert len(said) == 1
    assert said[0].startswith("MQTT fast path on" if fast_path else "MQTT fast path off")
    assert [int(p) for p in got] == list(range(300))
    assert [m.payload for m in inbox.taken] == [b"%d" % i for i in range(50)]
    expected = [b"c" if protocol == 5 and i % 2 else None for i in range(50)]
    assert [m.correlation_data for m in inbox.taken] == expected


class _Kept(_Ignore):
    """An inbox that keeps what it takes."""

    def __init__(self) -> None:
        self.taken: list[Inbound] = []

    def offer(self, msg: Inbound) -> bool:
        self.taken.append(msg)
        return True
