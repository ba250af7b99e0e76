"""A lean HTTP/1.1 transport for the Tencent clients: h11 over asyncio streams, kept alive.

httpx's default transport (httpcore over anyio) costs about 1.9 ms of CPU per call on a 2-vCPU
VM, where the same request written on asyncio streams costs about 0.3 ms (`scripts/bench --only
httpcost`). The Tencent APIs need only what this does: small JSON POSTs over keep-alive HTTP/1.1,
plain or TLS. The httpx client API stays (auth, timeouts, responses); failures are raised as
httpx's own exceptions with the same meaning, which the retry rules depend on: `ConnectError`
and `ConnectTimeout` only when not one byte of the request was sent (see `transport._NOT_SENT`).
A proxy configured in the environment is not supported here: `client()` then keeps httpx's
default transport, which honours it.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import ssl
import urllib.request
from dataclasses import dataclass, field

import h11
import httpx

DEFAULT_PORTS = {"http": 80, "https": 443}
_READ_SIZE = 65536


@dataclass(eq=False)
class _Connection:
    """One keep-alive connection and its HTTP/1.1 state machine."""

    reader: asyncio.StreamReader
    writer: asyncio.StreamWriter
    h11: h11.Connection = field(default_factory=lambda: h11.Connection(h11.CLIENT))

    @property
    def usable(self) -> bool:
        """Idle, and the server has not closed it meanwhile."""
        return not self.reader.at_eof() and not self.writer.is_closing()

    def close(self) -> None:
        """Drop the connection (no waiting: the peer may be gone)."""
        self.writer.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections per origin, at most `max_connections` in use."""

    def __init__(
        self,
        *,
        max_connections: int = 200,
        max_idle: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._ssl = ssl_context
        self._open: set[_Connection] = set()  # idle or in use: all closed by aclose()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request and read its whole response."""
        timeouts = request.extensions.get("timeout", {})
        # asyncio.timeout, not wait_for: in 3.11 wait_for can drop a result that arrives as it
        # is cancelled (a slot never released, a connection never closed).
        try:
            async with asyncio.timeout(timeouts.get("pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection slot free", request=request) from None
        try:
            return await self._exchange(request, timeouts)
        finally:
            self._slots.release()

    async def _exchange(self, request: httpx.Request, timeouts: dict[str, float]) -> httpx.Response:
        origin = _origin(request)
        conn = self._checkout(origin) or await self._connect(origin, request, timeouts)
        try:
            await _send(conn, request, timeouts.get("write"))
            response = await _receive(conn, request, timeouts.get("read"))
        except BaseException:
            self._drop(conn)  # its state is unknown: never reused
            raise
        self._checkin(origin, conn)
        return response

    def _checkout(self, origin: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(origin, [])
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            self._drop(conn)
        return None

    def _checkin(self, origin: tuple[str, str, int], conn: _Connection) -> None:
        state = conn.h11
        if state.our_state is h11.DONE and state.their_state is h11.DONE and not self._closed:
            state.start_next_cycle()
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def _connect(
        self, origin: tuple[str, str, int], request: httpx.Request, timeouts: dict[str, float]
    ) -> _Connection:
        scheme, host, port = origin
        tls = self._tls_context() if scheme == "https" else None
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out", request=request) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS verification: nothing was sent
            raise httpx.ConnectError(
                f"cannot connect: {type(exc).__name__}", request=request
            ) from exc
        sock = writer.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        conn = _Connection(reader, writer)
        if self._closed:  # aclose() ran while this connection was being opened
            conn.close()
            raise httpx.ConnectError("the transport is closed", request=request)
        self._open.add(conn)
        return conn

    def _tls_context(self) -> ssl.SSLContext:
        if self._ssl is None:
            self._ssl = httpx.create_ssl_context()
        return self._ssl

    async def aclose(self) -> None:
        """Close every connection, idle or in use."""
        self._closed = True
        conns = list(self._open)
        self._open.clear()
        self._idle.clear()
        for conn in conns:
            conn.close()
        for conn in conns:
            with contextlib.suppress(OSError, TimeoutError):
                await asyncio.wait_for(conn.writer.wait_closed(), 1.0)


def _origin(request: httpx.Request) -> tuple[str, str, int]:
    scheme = request.url.scheme
    if scheme not in DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}", request=request)
    return scheme, request.url.host, request.url.port or DEFAULT_PORTS[scheme]


async def _send(conn: _Connection, request: httpx.Request, limit: float | None) -> None:
    body = await request.aread()
    head = h11.Request(
        method=request.method, target=request.url.raw_path, headers=request.headers.raw
    )
    data = conn.h11.send(head) or b""
    if body:
        data += conn.h11.send(h11.Data(data=body)) or b""
    data += conn.h11.send(h11.EndOfMessage()) or b""
    try:
        conn.writer.write(data)  # one write: headers and body in one segment
        async with asyncio.timeout(limit):
            await conn.writer.drain()
    except TimeoutError:
        raise httpx.WriteTimeout("write timed out", request=request) from None
    except OSError as exc:
        raise httpx.WriteError(f"write failed: {type(exc).__name__}", request=request) from exc


async def _receive(
    conn: _Connection, request: httpx.Request, limit: float | None
) -> httpx.Response:
    try:
        async with asyncio.timeout(limit):
            return await _read_response(conn, request)
    except TimeoutError:
        raise httpx.ReadTimeout("read timed out", request=request) from None
    except OSError as exc:
        raise httpx.ReadError(f"read failed: {type(exc).__name__}", request=request) from exc
    except h11.RemoteProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc


async def _read_response(conn: _Connection, request: httpx.Request) -> httpx.Response:
    head: h11.Response | None = None
    parts: list[bytes] = []
    while True:
        event = conn.h11.next_event()
        if event is h11.NEED_DATA:
            conn.h11.receive_data(await conn.reader.read(_READ_SIZE))
        elif isinstance(event, h11.Response):
            head = event
        elif isinstance(event, h11.Data):
            parts.append(bytes(event.data))
        elif isinstance(event, h11.EndOfMessage) and head is not None:
            return httpx.Response(
                head.status_code,
                headers=head.headers.raw_items(),
                stream=httpx.ByteStream(b"".join(parts)),
                extensions={"http_version": b"HTTP/1.1", "reason_phrase": head.reason},
            )
        elif isinstance(event, h11.ConnectionClosed):
            raise httpx.RemoteProtocolError(
                "server disconnected without a response", request=request
            )
        # InformationalResponse (1xx): keep reading


def client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client for one Tencent API, on the lean transport unless a proxy is configured."""
    proxied = any(key in urllib.request.getproxies() for key in ("http", "https", "all"))
    if not proxied:  # the transport keeps its own limits: httpx's apply to its default one only
        return httpx.AsyncClient(timeout=httpx.Timeout(timeout), transport=LeanTransport())
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits)
