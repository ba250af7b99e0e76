"""The MQTT link's write path against a real mosquitto: a broker that stops reading."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal

import aiomqtt
import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config import MqttConfig
from bridge.mqtt import Inbound, MqttLink, window_for
from bridge.topics import Topics
from tests.support.broker import Broker

SIZE = 64 * 1024  # 256 in flight of these is far more than both socket buffers hold


async def _ignore(_: Inbound) -> None:
    return None


async def test_a_stalled_broker_gets_every_message_once_in_order(
    own_broker: Broker, base: str
) -> None:
    config = MqttConfig(url=own_broker.url, base_topic=base)
    link = MqttLink(config, Topics(base), subscriptions=[f"{base}/bridge/request/#"])
    received: list[int] = []
    async with aiomqtt.Client("127.0.0.1", own_broker.port) as sub:
        await sub.subscribe(f"{base}/load/#", qos=1)
        runner = asyncio.create_task(link.run(_ignore))
        try:
            await asyncio.wait_for(link.connected.wait(), 10)
            assert own_broker.proc is not None
            os.kill(own_broker.proc.pid, signal.SIGSTOP)  # it stops reading: the socket fills
            try:
                for i in range(400):
                    link.publish(f"{base}/load/{i}", i.to_bytes(4, "big") * (SIZE // 4))
                await asyncio.sleep(0.5)
                assert link.outbox_depth > 0  # the window is full, the rest waits in order
            finally:
                os.kill(own_broker.proc.pid, signal.SIGCONT)
            async with asyncio.timeout(15):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes) and len(message.payload) == SIZE
                    received.append(int.from_bytes(message.payload[:4], "big"))
                    if len(received) == 400:
                        break
        finally:
            await link.close(grace=5)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 10)
    assert received == list(range(400))


async def test_close_waits_for_the_puback_of_what_was_sent(own_broker: Broker, base: str) -> None:
    config = MqttConfig(url=own_broker.url, base_topic=base)
    link = MqttLink(config, Topics(base), subscriptions=[f"{base}/bridge/request/#"])
    runner = asyncio.create_task(link.run(_ignore))
    await asyncio.wait_for(link.connected.wait(), 10)
    await asyncio.sleep(0.2)  # the birth messages are acknowledged
    assert own_broker.proc is not None
    os.kill(own_broker.proc.pid, signal.SIGSTOP)  # no PUBACK can come back
    try:
        link.publish(f"{base}/last", b"words")  # handed to paho at once: the outbox is empty
        started = asyncio.get_running_loop().time()
        await link.close(grace=0.5)
        waited = asyncio.get_running_loop().time() - started
    finally:
        os.kill(own_broker.proc.pid, signal.SIGCONT)
    with contextlib.suppress(asyncio.CancelledError):
        await asyncio.wait_for(runner, 10)
    assert waited >= 0.45  # it waited out its grace for the acknowledgement


async def test_an_unpublishable_topic_is_dropped_and_the_link_goes_on(
    own_broker: Broker, base: str
) -> None:
    config = MqttConfig(url=own_broker.url, base_topic=base)
    link = MqttLink(config, Topics(base), subscriptions=[f"{base}/bridge/request/#"])
    async with aiomqtt.Client("127.0.0.1", own_broker.port) as sub:
        await sub.subscribe(f"{base}/after", qos=1)
        runner = asyncio.create_task(link.run(_ignore))
        try:
            await asyncio.wait_for(link.connected.wait(), 10)
            link.publish(f"{base}/bad/#", b"x")  # paho refuses a wildcard in a topic name
            link.publish(f"{base}/after", b"still here")
            async with asyncio.timeout(5):
                message = await anext(aiter(sub.messages))
        finally:
            await link.close(grace=5)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 10)
    assert message.payload == b"still here"
    assert (link.refused, link.dropped, link.reconnects) == (1, 0, 1)


@pytest.mark.parametrize("protocol", [5, 4])
async def test_qos2_never_overruns_the_broker(own_broker: Broker, base: str, protocol: int) -> None:
    """mosquitto takes 20 QoS 2 messages in flight and refuses the rest (Receive Maximum)."""
    config = MqttConfig(url=own_broker.url, base_topic=base, qos=2, protocol=protocol)
    link = MqttLink(config, Topics(base), subscriptions=[f"{base}/bridge/request/#"])
    received: list[int] = []
    async with aiomqtt.Client("127.0.0.1", own_broker.port) as sub:
        await sub.subscribe(f"{base}/q2/#", qos=2)
        runner = asyncio.create_task(link.run(_ignore))
        try:
            await asyncio.wait_for(link.connected.wait(), 10)
            assert link.window == (20 if protocol == 5 else 10)
            for i in range(1000):
                link.publish(f"{base}/q2/{i}", str(i).encode())
            async with asyncio.timeout(20):
                async for message in sub.messages:
                    assert isinstance(message.payload, bytes)
                    received.append(int(message.payload))
                    if len(received) == 1000:
                        break
        finally:
            await link.close(grace=5)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.wait_for(runner, 10)
    assert received == list(range(1000))


def test_window_follows_the_brokers_receive_maximum() -> None:
    connack = Properties(PacketTypes.CONNACK)  # type: ignore[no-untyped-call]
    connack.ReceiveMaximum = 20
    assert window_for(5, 1, connack) == 20
    assert window_for(5, 1, None) == window_for(5, 1, Properties(PacketTypes.CONNACK)) == 256  # type: ignore[no-untyped-call]
    assert (window_for(4, 1, None), window_for(4, 2, None), window_for(4, 0, None)) == (
        256,
        10,
        256,
    )
