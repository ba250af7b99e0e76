"""The MQTT link: will, birth, reconnect, resubscribe, re-assert, publish with v5 properties.

paho is driven through its public external-loop API by `bridge.mqtt.session.PahoSession`, one
per connection; `bridge.mqtt.transport` has what the link does at paho's level (windows, packet
sizes, TLS), `bridge.mqtt.inbox` what it receives, in order, and `bridge.mqtt.fastpath` paho's hot
read and publish paths, used when `mqtt.fast_path` is on and paho is a verified release.
Publishes are non-blocking: they go to paho at once when nothing waits before them, else into a
bounded outbox that a drain task hands to paho while connected, in order, with a window of
messages awaiting their acknowledgement (re-queued in order if the connection ends first).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from paho.mqtt.client import Client
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.config import MqttConfig
from bridge.core.backoff import backoff
from bridge.core.envelope import dumps
from bridge.core.inbound import Inbox
from bridge.core.topics import Topics
from bridge.mqtt import fastpath
from bridge.mqtt.inbox import InboundQueue, from_paho
from bridge.mqtt.session import MqttCodeError, MqttError, PahoSession, Subscription
from bridge.mqtt.transport import (
    INFLIGHT,
    RETAIN_NOT_SUPPORTED,
    connect_properties,
    publish_size,
    tls_context,
    window_for,
)

log = logging.getLogger(__name__)

ONLINE = dumps({"state": "online"})
OFFLINE_SHUTDOWN = dumps({"state": "offline", "reason": "shutdown"})
OFFLINE_LOST = dumps({"state": "offline", "reason": "connection_lost"})


@dataclass(frozen=True, slots=True)
class Outbound:
    """One message waiting in the outbox."""

    topic: str
    payload: bytes
    retain: bool = False
    correlation_data: bytes | None = None


class _Stop(Exception):
    """Raised inside the connection task group to leave it on shutdown."""


class MqttLink:
    """One broker connection, kept up forever; implements `bridge.core.envelope.Publisher`."""

    def __init__(
        self,
        config: MqttConfig,
        topics: Topics,
        *,
        subscriptions: list[str],
        outbox: int = 100_000,
        waiting: int = 10_000,
        will: bytes | None = None,
        reassert: Callable[[str], bool] | None = None,
    ) -> None:
        self._config = config
        self._topics = topics
        self._subscriptions = subscriptions
        # Which retained topics a reconnect re-asserts (None: all). In a cluster only the
        # instance's own bridge topics: a session's state may have moved to another owner
        # meanwhile, and re-asserting the old one would overwrite the newer.
        self._reassert = reassert
        self._will = (
            will or OFFLINE_LOST
        )  # a clustered instance's will names it (docs/scale-out.md)
        self._outbox: deque[Outbound] = deque()
        self._outbox_max = outbox
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._stop = asyncio.Event()
        self._retained: dict[str, bytes] = {}
        self._inbound = InboundQueue(waiting)
        self._unacked: dict[int, Outbound] = {}  # PUBACK awaited, by message id
        self._writer: PahoSession | None = None  # publishes while the drain task runs
        self._fast = fastpath.enabled(config.fast_path)  # checked (and logged) once
        self._window = INFLIGHT  # publishes awaiting their acknowledgement at most
        self.refused = 0  # messages no broker would take (a wildcard topic, too large)
        self._max_packet: int | None = None  # the broker's Maximum Packet Size (MQTT 5)
        self._retain_available = True  # the broker's Retain Available (MQTT 5)
        self._will_retain = True  # false once a broker refused a retained will
        self._warned_retain = False
        self.connected = asyncio.Event()
        self.reconnects = 0
        self.dropped = 0
        self.on_connect: list[Callable[[], None]] = []
        self.on_disconnect: list[Callable[[], None]] = []  # the link was lost (fencing)

    # -- Publisher -----------------------------------------------------------------------------
    def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None) -> None:
        """Queue a non-retained message."""
        self._enqueue(Outbound(topic, payload, False, correlation_data))

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained message and remember it for re-assertion."""
        self._retained[topic] = payload
        self._enqueue(Outbound(topic, payload, True))

    def clear_retained(self, topic: str) -> None:
        """Clear a retained topic and forget it."""
        self._retained.pop(topic, None)
        self._enqueue(Outbound(topic, b"", True))

    def retained_topics(self) -> list[str]:
        """Topics whose retained state the bridge currently owns."""
        return list(self._retained)

    @property
    def window(self) -> int:
        """Publishes that may await their acknowledgement at once on this connection."""
        return self._window

    @property
    def outbox_depth(self) -> int:
        """Messages waiting to be sent."""
        return len(self._outbox)

    @property
    def inbound_waiting(self) -> int:
        """Messages received while the inbox was full, waiting for room."""
        return len(self._inbound)

    def _enqueue(self, message: Outbound) -> None:
        if self._send_now(message):
            return
        if len(self._outbox) >= self._outbox_max:
            self._drop_one()
        self._outbox.append(message)
        self._idle.clear()
        self._wake.set()

    def _drop_one(self) -> None:
        # Retained state is re-asserted on reconnect anyway; drop the oldest message.
        self._outbox.popleft()
        self.dropped += 1
        if self.dropped == 1 or self.dropped % 1000 == 0:
            log.warning("MQTT outbox full: %d messages dropped so far", self.dropped)

    # -- connection ------------------------------------------------------------------------------
    def add_subscriptions(self, topics: list[str]) -> None:
        """Subscribe to `topics` too, from the next connection on (features add their own)."""
        self._subscriptions.extend(t for t in topics if t not in self._subscriptions)

    async def run(self, inbox: Inbox) -> None:
        """Connect, serve and reconnect until `close()`; inbound messages go to `inbox`."""
        self._inbound.inbox = inbox
        async with asyncio.TaskGroup() as tg:
            # One pump for the link's life: what waits for room is offered, connected or not.
            pump = tg.create_task(self._inbound.pump(inbox), name="mqtt-inbound")
            try:
                await self._connections()
            finally:
                pump.cancel()
        if left := self._inbound.abandon():  # acknowledged to the broker, never handled
            log.warning("MQTT: %d received messages not handled at shutdown", left)

    async def _connections(self) -> None:
        delays = backoff(0.2, self._config.reconnect_max_delay)
        while not self._stop.is_set():
            session = self._session()
            at_once = False
            try:
                await self._connect(session)
                delays = backoff(0.2, self._config.reconnect_max_delay)
                await self._serve(session)
                await session.disconnect()
                return
            except* MqttError as group:
                at_once = self._retain_refused(group.exceptions[0])  # again, without retain
                if not at_once:
                    self._lost(group.exceptions[0])
            finally:
                session.abort()  # no socket left open, whatever ended the attempt
            if not self._stop.is_set() and not at_once:
                await self._sleep(next(delays))

    def _retain_refused(self, exc: BaseException) -> bool:
        """A broker without retained messages refuses a CONNECT whose will is retained, or
        drops a link that publishes one (MQTT 5 reason 0x9A): from then on the will and the
        state topics go without retain."""
        code = exc.rc if isinstance(exc, MqttCodeError) else 0
        refused = int(code.value if isinstance(code, ReasonCode) else code) == RETAIN_NOT_SUPPORTED
        if not refused or not (self._will_retain or self._retain_available):
            return False
        self._will_retain = self._retain_available = False
        self._no_retain_warning()
        return True

    def _no_retain_warning(self) -> None:
        if not self._warned_retain:
            self._warned_retain = True
            log.warning(
                "MQTT broker %s:%d does not support retained messages: state topics and the "
                "will go without retain, so a late subscriber sees a state only when it changes",
                self._config.host,
                self._config.port,
            )

    def _lost(self, exc: BaseException) -> None:
        was_connected = self.connected.is_set()
        self.connected.clear()
        if was_connected:
            for callback in self.on_disconnect:
                callback()
        log.warning(
            "MQTT %s %s:%d: %s%s",
            "connection lost to" if was_connected else "cannot connect to",
            self._config.host,
            self._config.port,
            exc,
            "" if was_connected else tls_close_hint(self._config, str(exc)),
        )

    async def _sleep(self, delay: float) -> None:
        try:
            await asyncio.wait_for(self._stop.wait(), delay)
        except TimeoutError:
            return

    async def _serve(self, session: PahoSession) -> None:
        await self._subscribe(session)
        self._birth()
        try:
            async with asyncio.TaskGroup() as tg:
                tg.create_task(_until_ended(session), name="mqtt-connection")
                tg.create_task(self._drain(session), name="mqtt-outbound")
                tg.create_task(self._watch_stop(), name="mqtt-stop")
        except* _Stop:
            log.debug("MQTT link stopping")

    def _birth(self) -> None:
        """On every (re)connect: `online`, then every retained topic the bridge owns.

        Retained messages still queued for owned topics are superseded by the re-assertion
        (the latest value of each), so nothing stale or doubled goes out after a connect.
        """
        if self.connected.is_set():
            return
        self.reconnects += 1
        log.info("MQTT connected to %s:%d", self._config.host, self._config.port)
        self.connected.set()
        for callback in self.on_connect:
            callback()
        self._retained.pop(self._topics.state, None)
        self._retained = {self._topics.state: ONLINE, **self._retained}
        keep = self._reassert
        if keep is not None:
            self._retained = {t: p for t, p in self._retained.items() if keep(t)}
        pending = [
            m
            for m in self._outbox
            if not (m.retain and (m.topic in self._retained or (keep and not keep(m.topic))))
        ]
        self._outbox.clear()
        for topic, payload in self._retained.items():
            self._enqueue(Outbound(topic, payload, True))
        for message in pending:
            self._enqueue(message)

    async def _subscribe(self, session: PahoSession) -> None:
        # Retain As Published lets the bridge see the retain flag of live commands
        # (docs/reliability.md).
        qos = self._config.qos
        topics: list[Subscription]
        if self._config.protocol == 5:
            opts = SubscribeOptions(qos=qos, retainAsPublished=True)
            topics = [(topic, opts) for topic in self._subscriptions]
        else:
            topics = [(topic, qos) for topic in self._subscriptions]
        await session.subscribe(topics)

    def _arrived(self, *args: Any) -> None:
        """paho's on_message (client, userdata, message), on the event loop as it reads."""
        try:
            self._inbound.arrived(from_paho(args[2]))
        except Exception:  # never into paho's read loop: that would end the connection
            log.exception("MQTT: cannot take an inbound message")

    async def _drain(self, session: PahoSession) -> None:
        """Send the outbox in order, up to `_window` messages awaiting their acknowledgement.

        paho's publish is non-blocking; an awaitable one per message (a task, a timer) capped
        events far below what the bridge must carry. PUBACKs are tracked here instead:
        whatever is unacknowledged when the connection ends goes back to the head of the
        outbox, in order, and is sent again after the reconnect. While this task runs, a
        message queued behind an empty outbox goes to paho at once.
        """
        session.on_published = self._acked
        self._writer = writer = session
        try:
            await self._drain_loop(writer)
        finally:
            self._writer = None
            for msg in reversed(self._unacked.values()):
                self._outbox.appendleft(msg)
            self._unacked.clear()

    async def _drain_loop(self, writer: PahoSession) -> None:
        sent = 0
        while True:
            if not self._outbox or len(self._unacked) >= self._window:
                self._check_idle()
                self._wake.clear()
                await self._wake.wait()
                continue
            self._send(writer, self._outbox.popleft())
            sent += 1
            if sent % 64 == 0:
                await asyncio.sleep(0)  # let inbound messages and PUBACKs in

    def _send(self, writer: PahoSession, msg: Outbound) -> None:
        limit = self._max_packet
        if limit and self._packet_size(msg) > limit:
            # Sent anyway, the broker would disconnect; re-sent after the reconnect, forever.
            self._refuse(msg, f"larger than the broker's maximum packet size ({limit} bytes)")
            return
        try:
            retain = msg.retain and self._retain_available
            rc, mid, done = writer.publish(
                msg.topic, msg.payload, self._config.qos, retain, msg.correlation_data
            )
        except ValueError as exc:  # a topic or payload no broker can take: never sendable
            self._refuse(msg, str(exc))
            return
        if rc != 0:  # MQTT_ERR_SUCCESS
            self._outbox.appendleft(msg)
            raise MqttCodeError(rc, "Could not publish message")
        if self._config.qos and not done:
            self._unacked[mid] = msg

    def _refuse(self, msg: Outbound, why: str) -> None:
        self.refused += 1
        if msg.retain:
            self._retained.pop(msg.topic, None)  # not to be re-asserted on every connect
        log.error("MQTT: not publishing %d bytes to %r: %s", len(msg.payload), msg.topic[:200], why)

    def _packet_size(self, msg: Outbound) -> int:
        correlation = msg.correlation_data if self._config.protocol == 5 else None
        return publish_size(
            msg.topic,
            msg.payload,
            qos=self._config.qos,
            v5=self._config.protocol == 5,
            correlation=correlation,
        )

    def _send_now(self, msg: Outbound) -> bool:
        """Hand `msg` to paho now if nothing is queued before it and the window has room."""
        writer = self._writer
        if writer is None or self._outbox or len(self._unacked) >= self._window:
            return False
        try:
            self._send(writer, msg)
        except MqttError:
            self._wake.set()  # back in the outbox: the drain retries it, or ends the connection
        if self._outbox or self._unacked:
            self._idle.clear()  # set again by the drain once the outbox is sent and acknowledged
        return True

    def _acked(self, mid: int) -> None:
        if self._unacked.pop(mid, None) is not None:
            self._wake.set()

    def _check_idle(self) -> None:
        if not self._outbox and not self._unacked:
            self._idle.set()

    async def _watch_stop(self) -> None:
        await self._stop.wait()
        raise _Stop

    async def close(self, grace: float = 5.0, *, offline: bool = True) -> None:
        """Publish `offline`/`shutdown` (unless another instance stays: `offline=False`),
        flush the outbox (bounded), disconnect cleanly."""
        if offline:
            self.set_retained(self._topics.state, OFFLINE_SHUTDOWN)
        if self.connected.is_set():
            try:
                await asyncio.wait_for(self._idle.wait(), grace)
            except TimeoutError:
                log.warning("MQTT: %d messages not flushed before shutdown", len(self._outbox))
        self._stop.set()
        self.connected.clear()

    # -- client construction ------------------------------------------------------------------
    def _session(self) -> PahoSession:
        client = self._client()
        fast = fastpath.PahoFastPath(client) if self._fast else None
        return PahoSession(client, fast=fast, timeout=10.0)

    async def _connect(self, session: PahoSession) -> None:
        cfg = self._config
        connack = await session.connect(
            cfg.host,
            cfg.port,
            keepalive=cfg.keepalive,
            clean_start=cfg.clean_start,
            properties=connect_properties(cfg),
        )
        self._window = window_for(cfg.protocol, cfg.qos, connack)
        size = getattr(connack, "MaximumPacketSize", None) if connack is not None else None
        self._max_packet = size if isinstance(size, int) and size > 0 else None
        if getattr(connack, "RetainAvailable", 1) == 0:  # once off, off for this process
            self._retain_available = False
            self._no_retain_warning()

    def _client(self) -> Client:
        cfg = self._config
        v5 = cfg.protocol == 5
        client = Client(
            CallbackAPIVersion.VERSION2,
            client_id=cfg.effective_client_id(),
            clean_session=None if v5 else cfg.clean_start,
            protocol=MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311,
        )
        if cfg.username is not None:
            password = cfg.password.get_secret_value() if cfg.password else None
            client.username_pw_set(cfg.username, password)
        client.will_set(self._topics.state, self._will, qos=1, retain=self._will_retain)
        if cfg.tls:
            client.tls_set_context(tls_context(cfg))
        # The drain keeps the window of `INFLIGHT`; paho's own (0: none) would walk every
        # message in flight on each PUBACK.
        client.max_inflight_messages_set(0)
        client.on_message = self._arrived
        return client


def tls_close_hint(cfg: MqttConfig, reason: str) -> str:
    """Why a TLS broker may close a connection the bridge never saw accepted. In TLS 1.3 a
    broker that wants a client certificate says so after the handshake: the alert is lost when
    the bridge's CONNECT crosses the broker's close (a reset), and paho sees an EOF instead."""
    closed = any(s in reason for s in ("EOF occurred", "reset by peer"))
    if not (cfg.tls and closed and cfg.tls_cert_file is None):
        return ""
    return (
        "; the broker closed the TLS connection before accepting it: if it asks for a client "
        "certificate (CERTIFICATE_REQUIRED), set mqtt.tls_cert_file and mqtt.tls_key_file"
    )


async def _until_ended(session: PahoSession) -> None:
    """Wait for the connection to end, then raise why (an `MqttError`)."""
    raise await asyncio.shield(session.ended)
