"""A short-lived MQTT client for the command-line tools (`request`, `demo`).

The bridge's own link (`bridge.mqtt.link`) keeps one connection up forever and owns will, birth and
re-assertion; a tool needs none of that, only connect, subscribe, publish and one request/response
round trip. It drives paho through `bridge.mqtt.session.PahoSession` (public API only; no fast
path: a tool sends a handful of messages).
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config import MqttConfig
from bridge.core import jsontext
from bridge.core.inbound import Inbound
from bridge.core.topics import Topics
from bridge.mqtt.inbox import from_paho
from bridge.mqtt.session import MqttError, PahoSession
from bridge.mqtt.transport import tls_context


class BrokerError(Exception):
    """The broker cannot be reached, or the connection broke."""


class ToolClient:
    """One connection for a tool; use `async with ToolClient(cfg) as client:`."""

    def __init__(self, config: MqttConfig, *, name: str = "tool") -> None:
        self.config = config
        self.client_id = f"tencent2mqtt-{name}-{uuid.uuid4().hex[:8]}"
        self._subscribed: set[str] = set()
        self._received: asyncio.Queue[Inbound] = asyncio.Queue()
        self._session: PahoSession | None = None

    @property
    def v5(self) -> bool:
        """Whether the link speaks MQTT 5 (Response Topic and Correlation Data)."""
        return self.config.protocol == 5

    async def __aenter__(self) -> ToolClient:
        session = PahoSession(self._client(), timeout=10.0)
        try:
            await session.connect(self.config.host, self.config.port, keepalive=60)
        except MqttError as exc:
            where = f"{self.config.host}:{self.config.port}"
            raise BrokerError(f"cannot connect to the MQTT broker at {where}: {exc}") from exc
        self._session = session
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._session is not None:
            await self._session.disconnect()
            self._session = None

    def _client(self) -> Client:
        config = self.config
        v5 = config.protocol == 5
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        if config.username is not None:
            password = config.password.get_secret_value() if config.password else None
            client.username_pw_set(config.username, password)
        if config.tls:
            client.tls_set_context(tls_context(config))
        client.on_message = lambda _client, _userdata, msg: self._received.put_nowait(
            from_paho(msg)
        )
        return client

    @property
    def _connected(self) -> PahoSession:
        if self._session is None:
            raise BrokerError("not connected to the MQTT broker")
        return self._session

    async def subscribe(self, *filters: str) -> None:
        """Subscribe to topic filters at QoS 1 (once each)."""
        new = [topic for topic in filters if topic not in self._subscribed]
        if new:
            try:
                await self._connected.subscribe([(topic, 1) for topic in new])
            except MqttError as exc:
                raise BrokerError(f"cannot subscribe: {exc}") from exc
            self._subscribed.update(new)

    async def prepare_replies(self, topics: Topics) -> None:
        """Subscribe to the private response topic now, not at the first request (MQTT 5)."""
        if self.v5:
            await self.subscribe(topics.client_response(self.client_id))

    async def messages(self) -> AsyncIterator[Inbound]:
        """Every message received, as it comes."""
        while True:
            yield await self._next()

    async def _next(self) -> Inbound:
        if not self._received.empty():
            return self._received.get_nowait()
        ended = self._connected.ended
        received = asyncio.ensure_future(self._received.get())
        either: list[asyncio.Future[Any]] = [received, ended]
        try:
            await asyncio.wait(either, return_when=asyncio.FIRST_COMPLETED)
        finally:
            if not received.done():
                received.cancel()
        if received.done() and not received.cancelled():
            return received.result()
        raise BrokerError(f"MQTT connection lost: {ended.result()}")

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
        try:
            await self._connected.publish_acked(topic, payload, qos=1, properties=props)
        except MqttError as exc:
            raise BrokerError(f"cannot publish: {exc}") from exc


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
    payload = jsontext.dumps(body).encode()
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
