"""One paho client driven by the running asyncio loop through paho's public external-loop API.

paho calls `on_socket_open` / `on_socket_close` (the socket to read), `on_socket_register_write`
/ `on_socket_unregister_write` (something to write); the session answers with `loop_read`,
`loop_write` and, once a second, `loop_misc` (keepalive), as Home Assistant's MQTT client does.
Connecting runs in a worker thread (paho's `connect` resolves the name, opens TCP and does the
TLS handshake, all blocking); paho may call back from there, so those callbacks hop to the loop.

A write is not registered with the selector first: a flush is scheduled for the end of the
current loop pass, so everything queued in one pass goes out in one `loop_write`; only when the
socket buffer is full does the flush wait for it to become writable.

With a `PahoFastPath` the session reads, publishes and joins writes through it
(`bridge.mqtt.fastpath`); without one, through paho's own code alone.

Errors: `MqttError` (the connection could not be made, or ended), `MqttCodeError` (with paho's
or the broker's reason code, `rc`).
"""

from __future__ import annotations

import asyncio
import logging
import socket
import ssl
import threading
from collections.abc import Callable
from functools import partial
from typing import Any

from paho.mqtt.client import Client, ConnectFlags, DisconnectFlags
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode
from paho.mqtt.subscribeoptions import SubscribeOptions

from bridge.mqtt.fastpath import PahoFastPath

# paho's own log lines (why a read failed: a TLS alert, a reset) under the name they always had
PAHO_LOG = logging.getLogger("mqtt")
MISC_INTERVAL = 1.0  # seconds between `loop_misc` calls: keepalive pings and their timeout
Subscription = tuple[str, int] | tuple[str, SubscribeOptions]


class SessionLog(logging.Logger):
    """paho's log for one session: its lines go on to `mqtt` (PAHO_LOG) as before, and the last
    error is kept, because paho ends a connection with a bare code ("Unspecified error") and
    logs the reason (a TLS alert, a reset) only as a line."""

    def __init__(self) -> None:
        super().__init__(PAHO_LOG.name)
        self.parent = PAHO_LOG
        self.last_error: str | None = None

    def isEnabledFor(self, level: int) -> bool:
        """As `mqtt` is, read each time (logging clears only registered loggers' caches), and
        errors always: they are kept even where `mqtt` would not show them."""
        return level >= logging.ERROR or PAHO_LOG.isEnabledFor(level)

    def handle(self, record: logging.LogRecord) -> None:
        """Note an error line, then pass the record on where `mqtt` shows it."""
        if record.levelno >= logging.ERROR:
            self.last_error = record.getMessage()
        if PAHO_LOG.isEnabledFor(record.levelno):
            super().handle(record)


class MqttError(Exception):
    """The MQTT connection could not be made, or it ended."""


class MqttCodeError(MqttError):
    """An MQTT error with paho's error code or the broker's reason code (`rc`)."""

    def __init__(self, rc: int | ReasonCode, message: str) -> None:
        super().__init__(f"{message}: {rc}")
        self.rc = rc


class PahoSession:
    """Connect, subscribe, publish and disconnect one paho `Client` on the running loop.

    Build a new session (and client) per connection. `on_published(mid)` hears every
    acknowledged publish that no `publish_acked` awaits; `ended` completes with the `MqttError`
    that ended the connection.
    """

    def __init__(
        self, client: Client, *, fast: PahoFastPath | None = None, timeout: float = 10.0
    ) -> None:
        self.client = client
        self.fast = fast
        self.timeout = timeout
        self.on_published: Callable[[int], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._thread = threading.get_ident()
        self._fd = -1  # the socket registered with the loop, -1 while none is
        self._writing = False  # waiting for the socket to take more
        self._flush_due = False
        self._misc: asyncio.TimerHandle | None = None
        self._connack: asyncio.Future[Properties | None] = self._loop.create_future()
        self.ended: asyncio.Future[MqttError] = self._loop.create_future()
        self._waiters: dict[int, asyncio.Future[Any]] = {}  # SUBACK or PUBACK, by message id
        self._log = SessionLog()
        client.enable_logger(self._log)
        client.on_socket_open = self._on_socket_open
        client.on_socket_close = self._on_socket_close
        client.on_socket_register_write = self._on_register_write
        client.on_socket_unregister_write = self._on_unregister_write
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_subscribe = self._on_subscribe
        client.on_publish = self._on_publish

    @property
    def v5(self) -> bool:
        """Whether the client speaks MQTT 5."""
        return self.client.protocol == MQTTProtocolVersion.MQTTv5

    # -- the calls -------------------------------------------------------------------------------
    async def connect(
        self,
        host: str,
        port: int,
        *,
        keepalive: int,
        clean_start: bool = True,
        properties: Properties | None = None,
    ) -> Properties | None:
        """Connect and wait for CONNACK (bounded by `timeout`): its properties (MQTT 5).
        Raises `MqttError`, or `MqttCodeError` when the broker refuses."""
        kwargs: dict[str, Any] = {"keepalive": keepalive}
        if self.v5:  # 3.1.1 takes clean_session when the client is made
            kwargs.update(clean_start=clean_start, properties=properties)
        connect = partial(self.client.connect, host, port, **kwargs)
        try:
            async with asyncio.timeout(self.timeout):
                await self._loop.run_in_executor(None, connect)
                return await asyncio.shield(self._connack)
        except (OSError, ssl.SSLError, TimeoutError) as exc:
            self.abort()
            raise MqttError(f"cannot connect: {exc!r}") from exc
        except BaseException:  # refused, cancelled: no socket left open
            self.abort()
            raise

    async def subscribe(self, topics: list[Subscription]) -> list[ReasonCode]:
        """Subscribe and wait for SUBACK: the reason code per topic."""
        rc, mid = self.client.subscribe(topics)  # type: ignore[arg-type]
        self._check(rc, "cannot subscribe")
        if mid is None:
            raise MqttError("cannot subscribe: nothing to subscribe to")
        granted: list[ReasonCode] = await self._acked(mid)
        return granted

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, correlation: bytes | None = None
    ) -> tuple[int, int, bool]:
        """Queue one PUBLISH: (paho's return code, message id, already published). Raises
        `ValueError` for what paho refuses (a wildcard, a topic or payload too long)."""
        if self.fast is not None:
            return self.fast.publish(topic, payload, qos, retain, correlation)
        props = None
        if correlation is not None and self.v5:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        info = self.client.publish(topic, payload, qos, retain, props)
        return info.rc, info.mid, info.is_published()

    async def publish_acked(
        self, topic: str, payload: bytes, *, qos: int = 1, properties: Properties | None = None
    ) -> None:
        """Publish and wait until it is out (QoS 0) or acknowledged."""
        info = self.client.publish(topic, payload, qos, False, properties)
        self._check(info.rc, "cannot publish")
        if not info.is_published():
            await self._acked(info.mid)

    async def disconnect(self) -> None:
        """Send DISCONNECT and wait (bounded) for paho to close; close it anyway after."""
        if self.client.socket() is not None and not self.ended.done():
            self.client.disconnect()
            try:
                async with asyncio.timeout(self.timeout):
                    await asyncio.shield(self.ended)
            except TimeoutError:
                pass
        self.abort()

    def abort(self) -> None:
        """Close the socket now (a failed or abandoned attempt, or after disconnect); the
        client is not used again."""
        sock = self.client.socket()
        self._unregister()
        if sock is not None:
            sock.close()  # paho's own close is private
        self._end(MqttError("connection closed"))
        # paho calls back from its finaliser too (which may run on any thread, after the loop
        # is gone): nothing of this session is left for it to call.
        client = self.client
        client.on_socket_open = client.on_socket_close = None
        client.on_socket_register_write = client.on_socket_unregister_write = None

    async def _acked(self, mid: int) -> Any:
        waiter: asyncio.Future[Any] = self._loop.create_future()
        self._waiters[mid] = waiter
        try:
            async with asyncio.timeout(self.timeout):
                done, _ = await asyncio.wait([waiter, self.ended], return_when="FIRST_COMPLETED")
        except TimeoutError as exc:
            raise MqttError(f"no acknowledgement from the broker in {self.timeout:g} s") from exc
        finally:
            self._waiters.pop(mid, None)
        if waiter in done:
            return waiter.result()
        raise self.ended.result()

    @staticmethod
    def _check(rc: int, what: str) -> None:
        if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
            raise MqttCodeError(rc, what)

    # -- paho's callbacks ------------------------------------------------------------------------
    def _on_connect(
        self, client: Client, userdata: Any, flags: ConnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        if self._connack.done():
            return
        if rc.is_failure:
            self._connack.set_exception(MqttCodeError(rc, "connection refused"))
        else:
            self._connack.set_result(props if isinstance(props, Properties) else None)

    def _on_disconnect(
        self, client: Client, userdata: Any, flags: DisconnectFlags, rc: ReasonCode, props: Any
    ) -> None:
        why = self._log.last_error
        ended = f"disconnected ({why})" if why else "disconnected"
        error = MqttCodeError(rc, ended) if rc.is_failure else MqttError(ended)
        if not self._connack.done():
            self._connack.set_exception(error)
        self._end(error)

    def _on_subscribe(
        self, client: Client, userdata: Any, mid: int, granted: list[ReasonCode], props: Any
    ) -> None:
        waiter = self._waiters.pop(mid, None)
        if waiter is not None and not waiter.done():
            waiter.set_result(granted)

    def _on_publish(self, client: Client, userdata: Any, mid: int, *rest: Any) -> None:
        waiter = self._waiters.pop(mid, None)
        if waiter is not None:
            if not waiter.done():
                waiter.set_result(None)
        elif self.on_published is not None:
            self.on_published(mid)

    def _end(self, error: MqttError) -> None:
        if not self.ended.done():
            self.ended.set_result(error)
            if not self._connack.done():
                self._connack.set_exception(error)
                self._connack.exception()  # retrieved: nobody may be waiting any more

    # -- the socket, on the loop -----------------------------------------------------------------
    def _on_loop(self, callback: Callable[..., None], *args: Any) -> None:
        """Run `callback` on the loop: now if paho calls from it, else as soon as it can."""
        if threading.get_ident() == self._thread:
            callback(*args)
        else:
            self._loop.call_soon_threadsafe(callback, *args)

    def _on_socket_open(self, client: Client, userdata: Any, sock: Any) -> None:
        # Small packets (PUBACKs, replies) must not wait ~40 ms for Nagle + delayed ACK.
        if isinstance(sock, socket.socket):
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self._on_loop(self._opened, sock)

    def _opened(self, sock: Any) -> None:
        current = self.client.socket()
        if self.ended.done() or current is None or sock is not current:  # abandoned meanwhile
            sock.close()
            return
        self._fd = current.fileno()
        self._loop.add_reader(self._fd, self._readable)
        self._misc = self._loop.call_later(MISC_INTERVAL, self._tick)

    def _on_socket_close(self, client: Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._unregister)

    def _unregister(self) -> None:
        if self._fd >= 0:
            self._loop.remove_reader(self._fd)
            self._loop.remove_writer(self._fd)
            self._fd = -1
        self._writing = False
        if self._misc is not None:
            self._misc.cancel()
            self._misc = None

    def _on_register_write(self, client: Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._want_flush)

    def _want_flush(self) -> None:
        if not self._flush_due and not self._writing:
            self._flush_due = True
            self._loop.call_soon(self._flush)

    def _on_unregister_write(self, client: Client, userdata: Any, sock: Any) -> None:
        self._on_loop(self._written)

    def _written(self) -> None:
        if self._writing and self._fd >= 0:
            self._loop.remove_writer(self._fd)
        self._writing = False

    def _flush(self) -> None:
        self._flush_due = False
        client = self.client
        if self.fast is not None:
            self.fast.join()
        client.loop_write()  # an error closes the socket through paho: `on_disconnect`
        if client.want_write() and self._fd >= 0 and not self._writing:
            self._writing = True  # the socket buffer is full: wait until it takes more
            self._loop.add_writer(self._fd, self._flush)

    def _readable(self) -> None:
        if self.fast is not None:
            self.fast.loop_read()
        else:
            self.client.loop_read()
        sock = self.client.socket()
        # TLS may hold decrypted bytes the selector cannot see: read them now.
        if isinstance(sock, ssl.SSLSocket) and self._fd >= 0 and sock.pending():
            self._loop.call_soon(self._readable)

    def _tick(self) -> None:
        self._misc = None
        if self.client.loop_misc() == MQTTErrorCode.MQTT_ERR_SUCCESS and self._fd >= 0:
            self._misc = self._loop.call_later(MISC_INTERVAL, self._tick)
