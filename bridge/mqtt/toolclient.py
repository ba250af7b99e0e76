"""A short-lived MQTT client for the command-line tools (`request`, `demo`).

The bridge's own link (`bridge.mqtt.link`) keeps one connection up forever and owns will, birth and
re-assertion; a tool needs none of that, only connect, subscribe, publish and one request/response
round trip. This module and `bridge.mqtt.link` (with `mqtt_wire`, `mqtt_inbox`, `mqtt_lean`) are the
only aiomqtt users.
"""

from __future__ import annotations

import contextlib
import json
import socket
import uuid
from collections.abc import AsyncIterator
from typing import Any

import aiomqtt
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config import MqttConfig
from bridge.core import jsontext
from bridge.core.inbound import Inbound
from bridge.core.topics import Topics
from bridge.mqtt.inbox import inbound
from bridge.mqtt.transport import tls_context


class BrokerError(Exception):
    """The broker cannot be reached, or the connection broke."""


class ToolClient:
    """One connection for a tool; use `async with ToolClient(cfg) as client:`."""

    def __init__(self, config: MqttConfig, *, name: str = "tool") -> None:
        self.config = config
        self.client_id = f"tencent2mqtt-{name}-{uuid.uuid4().hex[:8]}"
        self._subscribed: set[str] = set()
        self._client = aiomqtt.Client(
            config.host,
            config.port,
            identifier=self.client_id,
            username=config.username,
            password=config.password.get_secret_value() if config.password else None,
            protocol=_protocol(config),
            tls_context=tls_context(config) if config.tls else None,
            timeout=10.0,
            socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
        )

    @property
    def v5(self) -> bool:
        """Whether the link speaks MQTT 5 (Response Topic and Correlation Data)."""
        return self.config.protocol == 5

    async def __aenter__(self) -> ToolClient:
        try:
            await self._client.__aenter__()
        except aiomqtt.MqttError as exc:
            where = f"{self.config.host}:{self.config.port}"
            raise BrokerError(f"cannot connect to the MQTT broker at {where}: {exc}") from exc
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(None, None, None)

    async def subscribe(self, *filters: str) -> None:
        """Subscribe to topic filters at QoS 1 (once each)."""
        new = [topic for topic in filters if topic not in self._subscribed]
        if new:
            await self._client.subscribe([(topic, 1) for topic in new])
            self._subscribed.update(new)

    async def prepare_replies(self, topics: Topics) -> None:
        """Subscribe to the private response topic now, not at the first request (MQTT 5)."""
        if self.v5:
            await self.subscribe(topics.client_response(self.client_id))

    async def messages(self) -> AsyncIterator[Inbound]:
        """Every message received, as it comes."""
        try:
            async for message in self._client.messages:
                yield inbound(message)
        except aiomqtt.MqttError as exc:
            raise BrokerError(f"MQTT connection lost: {exc}") from exc

    async def publish(
        self,
        topic: str,
        payload: bytes,
        *,
        response_topic: str | None = None,
        correlation_data: bytes | None = None,
    ) -> None:
        """Publish at QoS 1, not retained; v5 properties when given."""
        props = None
        if self.v5 and response_topic:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.ResponseTopic = response_topic
            props.CorrelationData = correlation_data or b""
        await self._client.publish(topic, payload, qos=1, properties=props)


async def request(
    client: ToolClient, topics: Topics, action: str, params: dict[str, Any]
) -> dict[str, Any]:
    """Publish one action request and return its response envelope (bound it with a timeout).

    Under MQTT 5 the answer comes on a private Response Topic, matched by Correlation Data;
    under 3.1.1 on `<base>/bridge/response/<action>`, matched by a fresh `transaction`.
    """
    body = dict(params)
    token = uuid.uuid4().hex
    if client.v5:
        reply_topic = topics.client_response(client.client_id)
    else:
        reply_topic = topics.response(action)
        body.setdefault("transaction", token)
    await client.subscribe(reply_topic)
    payload = json.dumps(body, ensure_ascii=False).encode()
    await client.publish(
        topics.request(action), payload, response_topic=reply_topic, correlation_data=token.encode()
    )
    async for msg in client.messages():
        answer = _match(msg, reply_topic, token, body.get("transaction"), client.v5)
        if answer is not None:
            return answer
    raise BrokerError("the MQTT connection ended before the answer came")


def _match(
    msg: Inbound, topic: str, token: str, transaction: Any, v5: bool
) -> dict[str, Any] | None:
    if msg.topic != topic or not msg.payload:
        return None
    with contextlib.suppress(ValueError):
        data = jsontext.loads(msg.payload)
        if not isinstance(data, dict):
            return None
        if v5 and msg.correlation_data == token.encode():
            return data
        if not v5 and data.get("transaction") == transaction:
            return data
    return None


def _protocol(config: MqttConfig) -> aiomqtt.ProtocolVersion:
    return aiomqtt.ProtocolVersion.V5 if config.protocol == 5 else aiomqtt.ProtocolVersion.V311
