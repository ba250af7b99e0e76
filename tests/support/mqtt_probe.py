"""A test-side MQTT client that records what the bridge publishes and sends requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.support import leaks


@dataclass(frozen=True)
class Received:
    """One message seen by the probe."""

    topic: str
    payload: bytes
    retain: bool
    correlation_data: bytes | None = None

    def json(self) -> Any:
        """The payload parsed as JSON."""
        return json.loads(self.payload)


class Probe:
    """Subscribes to everything under a base topic and keeps every message."""

    def __init__(self, url_port: int, base: str = "tencent2mqtt", *, protocol: int = 5) -> None:
        self.port = url_port
        self.base = base
        self.protocol = protocol
        self.messages: list[Received] = []
        self._changed = asyncio.Condition()
        self._client: aiomqtt.Client | None = None
        self._task: asyncio.Task[None] | None = None
        leaks.watch().source(f"mqtt probe {base}", self._texts)

    def _texts(self) -> list[tuple[str, str]]:
        return [(m.topic, m.topic + " " + leaks.text_of(m.payload)) for m in self.messages]

    async def __aenter__(self) -> Probe:
        version = aiomqtt.ProtocolVersion.V5 if self.protocol == 5 else aiomqtt.ProtocolVersion.V311
        self._client = aiomqtt.Client(
            "127.0.0.1",
            self.port,
            identifier=f"probe-{uuid.uuid4().hex[:8]}",
            protocol=version,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )
        await self._client.__aenter__()
        await self._client.subscribe(f"{self.base}/#", qos=1)
        self._task = asyncio.create_task(self._collect())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._task:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)
        if self._client:
            # the broker may have been killed under the probe: nothing left to disconnect
            with contextlib.suppress(aiomqtt.MqttError):
                await self._client.__aexit__(None, None, None)

    async def _collect(self) -> None:
        assert self._client is not None
        async for msg in self._client.messages:
            props = msg.properties
            corr = getattr(props, "CorrelationData", None) if props else None
            payload = msg.payload if isinstance(msg.payload, bytes) else str(msg.payload).encode()
            async with self._changed:
                self.messages.append(Received(msg.topic.value, payload, bool(msg.retain), corr))
                self._changed.notify_all()

    @property
    def client(self) -> aiomqtt.Client:
        """The underlying client, for publishing."""
        assert self._client is not None
        return self._client

    async def wait_for(
        self, predicate: Callable[[Received], bool], timeout: float = 5.0, start: int = 0
    ) -> Received:
        """The first message (from index `start`) that matches, waiting for it."""

        def find() -> Received | None:
            return next((m for m in self.messages[start:] if predicate(m)), None)

        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found

    async def wait_json(
        self, topic: str, check: Callable[[Any], bool] = lambda _: True, timeout: float = 5.0
    ) -> Any:
        """The first JSON payload on `topic` (relative to base) passing `check`."""
        full = f"{self.base}/{topic}"

        def match(m: Received) -> bool:
            return m.topic == full and bool(m.payload) and check(m.json())

        return (await self.wait_for(match, timeout)).json()

    def on(self, topic: str) -> list[Any]:
        """Every JSON payload seen on `topic` (relative to base)."""
        full = f"{self.base}/{topic}"
        return [m.json() for m in self.messages if m.topic == full and m.payload]

    async def publish(
        self,
        topic: str,
        payload: Any = b"",
        *,
        retain: bool = False,
        qos: int = 1,
        properties: Properties | None = None,
    ) -> None:
        """Publish to `topic` (relative to base); dicts become JSON."""
        body = json.dumps(payload).encode() if isinstance(payload, dict) else payload
        await self.client.publish(
            f"{self.base}/{topic}", body, qos=qos, retain=retain, properties=properties
        )

    async def request(
        self, action: str, payload: dict[str, Any] | None = None, timeout: float = 5.0
    ) -> Any:
        """Send an action request with a fresh transaction and wait for its response."""
        tx = uuid.uuid4().hex
        body = {**(payload or {}), "transaction": tx}
        start = len(self.messages)
        await self.publish(f"bridge/request/{action}", body)
        topic = f"{self.base}/bridge/response/{action}"

        def match(m: Received) -> bool:
            return m.topic == topic and m.json().get("transaction") == tx

        return (await self.wait_for(match, timeout, start=start)).json()


def response_properties(topic: str, correlation: bytes) -> Properties:
    """MQTT 5 PUBLISH properties asking for the response on `topic`."""
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.ResponseTopic = topic
    props.CorrelationData = correlation
    return props
