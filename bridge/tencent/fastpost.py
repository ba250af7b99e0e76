"""The HTTP fast path: one POST on aiohttp's own connection pool and response parser.

`aiohttp.ClientSession.post` builds, for every call, a `ClientRequest` (a header multidict, the
URL's parts, a body payload), a `ClientResponse`, timer contexts and often a writer task. For the
bridge's small signed JSON POSTs those objects are most of the client's CPU, about twice what
the request costs here (docs/performance.md, "HTTP fast path"). Everything that carries
meaning stays aiohttp's: the connector (the pool, keep-alive, TLS and its verification, the
connection limit, the connect timeout, the errors it raises) and the response protocol with
its parser (framing, chunked bodies, decompression, the read timeout, when a connection must
close). What this module writes itself is the request head, one format string.

The response protocol's `set_response_params`, `start_timeout` and `read` are not documented
API, so the fast path is used only with the aiohttp releases it was verified against
(`VERIFIED`) and only when `bridge.http_fast_path` is on. `bridge.tencent.session.HttpSession`
sends everything else through `ClientSession.post`: requests through a proxy, bodies over
`MAX_BODY`, and targets with characters a request line cannot carry as they are.
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
from collections.abc import Mapping
from dataclasses import dataclass

import aiohttp
from aiohttp.connector import Connection
from aiohttp.http import HttpProcessingError
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bridge.core.fastpaths import verdict

log = logging.getLogger(__name__)

# aiohttp releases whose response protocol this module was checked against: the HTTP client tests
# (tests/integration/tencent, each on both paths) passed on each, and the whole suite on 3.14.5.
VERIFIED = frozenset({"3.10.11", "3.11.18", "3.12.15", "3.13.5", "3.14.5"})
MAX_BODY = 65_536  # larger bodies go through aiohttp's writer, which waits for the socket to drain
# What a request target may hold unescaped (RFC 3986's unreserved, sub-delims, ':', '@', '/',
# '?' and percent escapes): anything else goes through aiohttp, which escapes or refuses it.
_TARGET = re.compile(r"[A-Za-z0-9\-._~!$&'()*+,;=:@/?%]*")
_HEADER_TEXT = re.compile(r"[^\r\n\x00]*")
# The headers aiohttp adds after the caller's, in its order, so the head is the one it sends.
# Only the encodings its parser always decodes (aiohttp adds br and zstd when their packages are
# installed).
_AUTO_HEADERS = b"Accept: */*\r\nAccept-Encoding: gzip, deflate\r\n"
_NO_HEADERS: CIMultiDictProxy[str] = CIMultiDictProxy(CIMultiDict())


def aiohttp_version() -> str:
    """The installed aiohttp release."""
    return aiohttp.__version__


def enabled(setting: bool, version: str | None = None) -> bool:
    """Whether to use the fast path: `setting` on and aiohttp at a verified release. Say which,
    once (the caller asks once, at start)."""
    version = version or aiohttp_version()
    return verdict(
        log, name="HTTP", setting=setting, key="bridge.http_fast_path", library="aiohttp",
        version=version, verified=VERIFIED,
    )  # fmt: skip


@dataclass(frozen=True, slots=True)
class _Target:
    """What one API URL needs, built once: the request the connector keys its pool on, and the
    request head around the query."""

    request: aiohttp.ClientRequest
    url: URL
    start: bytes  # b"POST /path"
    rest: bytes  # b" HTTP/1.1\r\nHost: ...\r\nUser-Agent: ...\r\n"


class FastPoster:
    """POSTs on one `aiohttp.ClientSession`'s connector, bypassing its per-request objects."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        *,
        timeout: aiohttp.ClientTimeout,
        ssl_context: ssl.SSLContext | bool,
        user_agent: str,
    ) -> None:
        self._session = session
        self._timeout = timeout
        self._ssl = ssl_context
        self._user_agent = user_agent
        self._targets: dict[str, _Target] = {}

    def accepts(self, url: str, query: str, content: bytes, headers: Mapping[str, str]) -> bool:
        """Whether the fast path can send this request exactly as given: an http(s) URL and a
        query a request line carries as they are, plain header text, a body up to `MAX_BODY`."""
        if len(content) > MAX_BODY or not _TARGET.fullmatch(query):
            return False
        if not all(_HEADER_TEXT.fullmatch(k + v) for k, v in headers.items()):
            return False
        try:
            self._target(url)
        except ValueError:
            return False
        return True

    async def post(
        self, url: str, query: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """POST as `HttpSession.post` does, with the same exceptions: the connector's for a
        connection that cannot be had, the protocol's for one that fails or times out."""
        target = self._target(url)
        head = b"".join(
            (
                target.start,
                b"?" if query else b"",
                query.encode("ascii"),
                target.rest,
                "".join(f"{k}: {v}\r\n" for k, v in headers.items()).encode("latin-1"),
                _AUTO_HEADERS,
                b"Content-Length: %d\r\n\r\n" % len(content),
            )
        )
        connector = self._session.connector
        if connector is None:  # the session was closed
            raise aiohttp.ClientConnectionError("Session is closed")
        conn = await connector.connect(target.request, [], self._timeout)
        try:
            status, body = await self._exchange(conn, target, head + content)
        except BaseException:
            conn.close()  # a request cut off midway leaves the connection in an unknown state
            raise
        conn.release()  # back to the pool, or closed if the response said so
        return status, body

    async def _exchange(self, conn: Connection, target: _Target, data: bytes) -> tuple[int, bytes]:
        protocol, transport = conn.protocol, conn.transport
        if protocol is None or transport is None or transport.is_closing():
            # what aiohttp's writer raises for a connection closed under it
            raise aiohttp.ClientConnectionResetError("Cannot write to closing transport")
        timeout = self._timeout
        protocol.set_response_params(
            read_timeout=timeout.sock_read, timeout_ceil_threshold=timeout.ceil_threshold
        )
        transport.write(data)
        protocol.start_timeout()
        while True:
            try:
                message, payload = await protocol.read()
            except HttpProcessingError as exc:  # as ClientResponse.start maps it
                info = aiohttp.RequestInfo(target.url, "POST", _NO_HEADERS, target.url)
                raise aiohttp.ClientResponseError(
                    info, (), status=exc.code, message=exc.message, headers=exc.headers
                ) from exc
            if not 100 <= message.code <= 199 or message.code == 101:
                break
        return message.code, await payload.read()

    def _target(self, url: str) -> _Target:
        try:
            return self._targets[url]  # one per API URL: a handful
        except KeyError:
            target = self._targets[url] = self._build(url)
            return target

    def _build(self, url: str) -> _Target:
        parsed = URL(url, encoded=True)
        path, host = parsed.raw_path or "/", parsed.host_port_subcomponent
        if parsed.scheme not in ("http", "https") or not host or parsed.raw_query_string:
            raise ValueError("not a URL the fast path sends")
        if not _TARGET.fullmatch(path) or not _HEADER_TEXT.fullmatch(host):
            raise ValueError("not a URL the fast path sends")
        request = aiohttp.ClientRequest(
            "POST", parsed, loop=asyncio.get_running_loop(), ssl=self._ssl
        )
        rest = f" HTTP/1.1\r\nHost: {host}\r\nUser-Agent: {self._user_agent}\r\n"
        return _Target(request, parsed, f"POST {path}".encode("ascii"), rest.encode("latin-1"))
