"""A lean HTTP/1.1 transport for the Tencent clients: `http1` on an asyncio protocol, kept alive.

httpx's default transport (httpcore over anyio) costs about 1.9 ms of CPU per call on a 2-vCPU
VM, where the same request written on asyncio streams costs about 0.3 ms (`scripts/bench --only
httpcost`). The Tencent APIs need only what this does: small JSON POSTs over keep-alive HTTP/1.1,
plain or TLS. The httpx client API stays (auth, timeouts, responses); failures are raised as
httpx's own exceptions with the same meaning, which the retry rules depend on: `ConnectError`
and `ConnectTimeout` only when not one byte of the request was sent (see `transport._NOT_SENT`).
A proxy configured in the environment is not supported here: `client()` then keeps httpx's
default transport, which honours it.

httpx's client layer (request and URL objects, cookies, the auth flow, redirects) costs more CPU
than the exchange itself, so `LeanClient.post_bytes` sends the same POST without it.
"""

from __future__ import annotations

import asyncio
import socket
import ssl
import urllib.request
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from urllib.parse import quote, urlsplit

import httpx

from bridge import __version__
from bridge.tencent.http1 import ProtocolError, Response, ResponseParser, request_bytes

DEFAULT_PORTS = {"http": 80, "https": 443}
_USER_AGENT = f"tencent2mqtt/{__version__}".encode()
Origin = tuple[str, str, int]
_SAFE = "/%?&=;:@+$,!~*'()[]"  # what stays as it is in a request target; the rest is escaped


@dataclass(frozen=True, slots=True)
class Wire:
    """One request as it goes on the wire."""

    origin: Origin
    method: bytes
    target: bytes
    headers: list[tuple[bytes, bytes]]
    body: bytes


class _Connection(asyncio.Protocol):
    """One keep-alive connection: at most one exchange at a time, its response parsed as the
    bytes arrive (no stream reader, no task switch per read)."""

    def __init__(self) -> None:
        self.transport: asyncio.Transport | None = None
        self.reusable = False
        self._last = False
        self._parser: ResponseParser | None = None
        self._answer: asyncio.Future[Response] | None = None
        self._drained: asyncio.Future[None] | None = None
        self.gone = asyncio.get_running_loop().create_future()  # done once the socket is closed

    @property
    def closed(self) -> bool:
        """The connection has ended."""
        return self.gone.done()

    @property
    def usable(self) -> bool:
        """Idle, and the server has not closed it meanwhile."""
        return self.reusable and not self.closed and self.transport is not None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        """asyncio: connected."""
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def send(self, data: bytes, *, head_request: bool, last: bool) -> asyncio.Future[Response]:
        """Write one request (`last`: it said `Connection: close`); its response's future."""
        assert self.transport is not None
        self.reusable = False  # until its response is whole
        self._last = last
        self._parser = ResponseParser(head_request=head_request)
        self._answer = asyncio.get_running_loop().create_future()
        self.transport.write(data)
        return self._answer

    def abandon(self) -> None:
        """The caller gave up on this exchange: its answer, if any, is never read."""
        answer = self._answer
        if answer is not None:
            if not answer.done():
                answer.cancel()
            elif not answer.cancelled():
                answer.exception()  # seen: no "never retrieved" log
        self._parser = self._answer = None

    async def drain(self) -> None:
        """Until the transport's buffer is below its high-water mark again."""
        if self.closed:
            raise ConnectionResetError("connection lost")
        self._drained = asyncio.get_running_loop().create_future()
        await self._drained

    def pause_writing(self) -> None:
        """asyncio: the write buffer is full (`drain()` waits)."""

    def resume_writing(self) -> None:
        """asyncio: room in the write buffer again."""
        if self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def data_received(self, data: bytes) -> None:
        """asyncio: bytes from the server."""
        parser, answer = self._parser, self._answer
        if parser is None or answer is None or answer.done():
            self.reusable = False  # the server spoke out of turn: never reused
            self.close()
            return
        try:
            response = parser.feed(data)
        except ProtocolError as exc:
            answer.set_exception(exc)
            self.close()
            return
        if response is not None:
            self.reusable = response.reusable and not parser.leftover and not self._last
            self._parser = self._answer = None  # more bytes now: out of turn
            answer.set_result(response)

    def connection_lost(self, exc: Exception | None) -> None:
        """asyncio: the connection ended (either side)."""
        self.reusable = False
        if not self.gone.done():
            self.gone.set_result(None)
        if self._drained is not None and not self._drained.done():
            self._drained.set_exception(ConnectionResetError("connection lost"))
        answer, parser = self._answer, self._parser
        if answer is None or answer.done() or parser is None:
            return
        if exc is not None:
            answer.set_exception(exc)
            return
        try:
            answer.set_result(parser.eof())
        except ProtocolError as error:
            answer.set_exception(error)

    def close(self) -> None:
        """Drop the connection (no waiting: the peer may be gone)."""
        if self.transport is not None:
            self.transport.close()


class LeanTransport(httpx.AsyncBaseTransport):
    """Keep-alive HTTP/1.1 connections per origin, at most `max_connections` in use."""

    def __init__(
        self,
        *,
        max_connections: int = 200,
        max_idle: int = 100,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self._idle: dict[Origin, list[_Connection]] = {}
        self._slots = asyncio.Semaphore(max_connections)
        self._max_idle = max_idle
        self._ssl = ssl_context
        self._open: set[_Connection] = set()  # idle or in use: all closed by aclose()
        self._closed = False

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        """Send one request and read its whole response."""
        wire = Wire(
            _origin(request),
            request.method.encode("ascii"),
            request.url.raw_path,
            list(request.headers.raw),
            await request.aread(),
        )
        answer = await self.exchange(wire, request.extensions.get("timeout", {}), request)
        return httpx.Response(
            answer.status,
            headers=answer.headers,
            stream=httpx.ByteStream(answer.body),
            extensions={"http_version": b"HTTP/1.1", "reason_phrase": answer.reason},
        )

    async def exchange(
        self, wire: Wire, timeouts: Mapping[str, float | None], request: httpx.Request | None = None
    ) -> Response:
        """Send `wire` and read its whole response; failures raise httpx's exceptions."""
        # asyncio.timeout, not wait_for: in 3.11 wait_for can drop a result that arrives as it
        # is cancelled (a slot never released, a connection never closed).
        if self._slots.locked():  # a timer only when the call has to wait for a slot
            try:
                async with asyncio.timeout(timeouts.get("pool")):
                    await self._slots.acquire()
            except TimeoutError:
                raise httpx.PoolTimeout("no connection slot free", request=request) from None
        else:
            await self._slots.acquire()
        try:
            return await self._exchange(wire, timeouts, request)
        finally:
            self._slots.release()

    async def _exchange(
        self, wire: Wire, timeouts: Mapping[str, float | None], request: httpx.Request | None
    ) -> Response:
        origin = wire.origin
        conn = self._checkout(origin) or await self._connect(origin, request, timeouts)
        try:
            answer = _send(conn, wire, request)
            await _drain(conn, timeouts.get("write"), request)
            response = await _receive(answer, timeouts.get("read"), request)
        except BaseException:
            conn.abandon()
            self._drop(conn)  # its state is unknown: never reused
            raise
        self._checkin(origin, conn)
        return response

    def _checkout(self, origin: Origin) -> _Connection | None:
        idle = self._idle.get(origin, [])
        while idle:
            conn = idle.pop()
            if conn.usable:
                return conn
            self._drop(conn)
        return None

    def _checkin(self, origin: Origin, conn: _Connection) -> None:
        if conn.usable and not self._closed:
            idle = self._idle.setdefault(origin, [])
            if len(idle) < self._max_idle:
                idle.append(conn)
                return
        self._drop(conn)

    def _drop(self, conn: _Connection) -> None:
        conn.close()
        self._open.discard(conn)

    async def _connect(
        self,
        origin: Origin,
        request: httpx.Request | None,
        timeouts: Mapping[str, float | None],
    ) -> _Connection:
        scheme, host, port = origin
        tls = self._tls_context() if scheme == "https" else None
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(timeouts.get("connect")):
                _, conn = await loop.create_connection(
                    _Connection, host, port, ssl=tls, server_hostname=host if tls else None
                )
        except TimeoutError:
            raise httpx.ConnectTimeout("connect timed out", request=request) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS verification: nothing was sent
            raise httpx.ConnectError(
                f"cannot connect: {type(exc).__name__}", request=request
            ) from exc
        assert conn.transport is not None
        sock = conn.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
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
        if conns:  # until their sockets are closed, bounded: a TLS peer may not answer
            await asyncio.wait([conn.gone for conn in conns], timeout=1.0)


def _origin(request: httpx.Request) -> Origin:
    scheme = request.url.scheme
    if scheme not in DEFAULT_PORTS:
        raise httpx.UnsupportedProtocol(f"unsupported scheme {scheme!r}", request=request)
    return scheme, request.url.host, request.url.port or DEFAULT_PORTS[scheme]


def _send(conn: _Connection, wire: Wire, request: httpx.Request | None) -> asyncio.Future[Response]:
    """Write the request (one write: head and body in one segment); its response's future."""
    try:
        data = request_bytes(wire.method, wire.target, wire.headers, wire.body)
    except ValueError as exc:
        raise httpx.LocalProtocolError(str(exc), request=request) from exc
    try:
        last = any(
            name.lower() == b"connection" and b"close" in value.lower()
            for name, value in wire.headers
        )
        return conn.send(data, head_request=wire.method == b"HEAD", last=last)
    except OSError as exc:
        raise httpx.WriteError(f"write failed: {type(exc).__name__}", request=request) from exc


async def _drain(conn: _Connection, limit: float | None, request: httpx.Request | None) -> None:
    """If not all of the request went out at once: wait until it has, bounded."""
    transport = conn.transport
    if transport is None or not transport.get_write_buffer_size():
        return
    try:
        async with asyncio.timeout(limit):
            while transport.get_write_buffer_size() > transport.get_write_buffer_limits()[1]:
                await conn.drain()
    except TimeoutError:
        raise httpx.WriteTimeout("write timed out", request=request) from None
    except OSError as exc:
        raise httpx.WriteError(f"write failed: {type(exc).__name__}", request=request) from exc


async def _receive(
    answer: asyncio.Future[Response], limit: float | None, request: httpx.Request | None
) -> Response:
    try:
        async with asyncio.timeout(limit):
            return await answer
    except TimeoutError:
        raise httpx.ReadTimeout("read timed out", request=request) from None
    except OSError as exc:
        raise httpx.ReadError(f"read failed: {type(exc).__name__}", request=request) from exc
    except ProtocolError as exc:
        raise httpx.RemoteProtocolError(str(exc), request=request) from exc


class LeanClient(httpx.AsyncClient):
    """httpx's client on a `LeanTransport`, plus `post_bytes`, the same POST without httpx's
    client layer: about half of the bridge's CPU per upstream call went to that layer."""

    def __init__(self, timeout: float, transport: LeanTransport | None = None) -> None:
        self.lean = transport or LeanTransport()
        self._timeouts = dict.fromkeys(("connect", "read", "write", "pool"), timeout)
        super().__init__(timeout=httpx.Timeout(timeout), transport=self.lean)

    async def post_bytes(
        self, url: str, query: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """POST `content` to `url` with `query` appended: the status and the decoded body."""
        origin, path, host = _split(url)
        target = f"{path}{'&' if '?' in path else '?'}{query}" if query else path
        wire_headers = [
            (b"Host", host),
            (b"User-Agent", _USER_AGENT),
            (b"Content-Length", str(len(content)).encode()),
            *((name.encode(), value.encode()) for name, value in headers.items()),
        ]
        wire = Wire(origin, b"POST", target.encode("ascii"), wire_headers, content)
        answer = await self.lean.exchange(wire, self._timeouts)
        return answer.status, _decoded(answer)


@lru_cache(maxsize=64)
def _split(url: str) -> tuple[Origin, str, bytes]:
    """`url`'s origin, its path (and query) as the request target, and its Host header."""
    parts = urlsplit(url)
    scheme = parts.scheme
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise httpx.UnsupportedProtocol(f"unsupported URL scheme {scheme!r}")
    port = parts.port or DEFAULT_PORTS[scheme]
    target = quote((parts.path or "/") + (f"?{parts.query}" if parts.query else ""), _SAFE)
    host = parts.netloc.rpartition("@")[2]  # no userinfo in a Host header
    if parts.port == DEFAULT_PORTS[scheme]:
        host = host.rpartition(":")[0]
    return (scheme, parts.hostname, port), target, host.encode("idna")


def _decoded(answer: Response) -> bytes:
    """The body, decompressed if the server compressed it anyway (nothing asked it to).

    As httpx does: an empty body stays empty, an unknown encoding is passed through. A body
    that does not decompress is passed through too: it then fails as JSON, and the reply is
    judged by its HTTP status (a gateway's 502 stays retryable).
    """
    encoding = next((v for k, v in answer.headers if k.lower() == b"content-encoding"), b"")
    if not answer.body or encoding.strip().lower() not in (b"gzip", b"deflate", b"x-gzip"):
        return answer.body
    try:
        return zlib.decompress(answer.body, zlib.MAX_WBITS | 32)  # a gzip or a zlib header
    except zlib.error:
        try:
            return zlib.decompress(answer.body, -zlib.MAX_WBITS)  # raw deflate, as some send
        except zlib.error:
            return answer.body


def client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client for one Tencent API, on the lean transport unless a proxy is configured."""
    proxied = any(key in urllib.request.getproxies() for key in ("http", "https", "all"))
    if not proxied:  # the transport keeps its own limits: httpx's apply to its default one only
        return LeanClient(timeout)
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    return httpx.AsyncClient(timeout=httpx.Timeout(timeout), limits=limits)
