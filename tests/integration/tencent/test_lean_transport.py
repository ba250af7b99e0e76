"""The lean HTTP/1.1 transport over real sockets: keep-alive, stale connections, errors."""

from __future__ import annotations

import asyncio
import contextlib
import gzip
import ssl
from collections.abc import AsyncIterator, Awaitable, Callable

import httpx
import pytest
import trustme

from bridge.emulator import Emulator
from bridge.errors import UpstreamError
from bridge.tencent.ivh import IvhClient
from bridge.tencent.lean import LeanClient, LeanTransport, _split
from bridge.tencent.retry import RetryPolicy
from bridge.tencent.transport import never_sent
from tests.support.cloud import emulator

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, deadline=5.0)
BODY = b'{"Header":{"Code":0},"Payload":{"SessionStatus":1}}'


async def read_request(reader: asyncio.StreamReader) -> bytes:
    """One whole request (head and Content-Length body) from a client connection."""
    head = await reader.readuntil(b"\r\n\r\n")
    length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
    return head + await reader.readexactly(length)


class KeepAliveServer:
    """Answers every request on a connection; `close_after` responses, it closes it silently."""

    def __init__(self, close_after: int | None = None, chunked: bool = False) -> None:
        self.close_after = close_after
        self.chunked = chunked
        self.connections = 0
        self.requests = 0
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        served = 0
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while self.close_after is None or served < self.close_after:
                await read_request(reader)
                self.requests += 1
                served += 1
                writer.write(self._answer())
                await writer.drain()
        writer.close()

    def _answer(self) -> bytes:
        if self.chunked:
            half = len(BODY) // 2
            chunks = b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in (BODY[:half], BODY[half:]))
            return b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n" + chunks + b"0\r\n\r\n"
        return b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY)


Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


@contextlib.asynccontextmanager
async def answering(handle: Handler, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    """A loopback HTTP(S) server running `handle` per connection; its base URL."""
    listener = await asyncio.start_server(handle, "127.0.0.1", 0, ssl=tls)
    scheme = "https" if tls else "http"
    try:
        yield f"{scheme}://127.0.0.1:{listener.sockets[0].getsockname()[1]}"
    finally:
        listener.close()
        await listener.wait_closed()


@contextlib.asynccontextmanager
async def serving(server: KeepAliveServer, tls: ssl.SSLContext | None = None) -> AsyncIterator[str]:
    try:
        async with answering(server.handle, tls) as base:
            yield base
    finally:
        for writer in server.writers:
            writer.close()
        await asyncio.sleep(0.01)  # let the closes complete


def ivh(http: httpx.AsyncClient, base: str) -> IvhClient:
    return IvhClient(http, base_url=base, appkey="a", access_token="t", retry=FAST)


Make = Callable[..., httpx.AsyncClient]


def _httpx_client(transport: LeanTransport | None = None, timeout: float = 5) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=transport or LeanTransport(), timeout=timeout)


def _lean_client(transport: LeanTransport | None = None, timeout: float = 5) -> httpx.AsyncClient:
    return LeanClient(timeout, transport)


@pytest.fixture(params=["httpx-client", "lean-client"])
def make(request: pytest.FixtureRequest) -> Make:
    """The transport under httpx's client layer, and under `LeanClient.post_bytes`."""
    return _httpx_client if request.param == "httpx-client" else _lean_client


@pytest.mark.parametrize("chunked", [False, True])
async def test_sequential_calls_share_one_connection(chunked: bool, make: Make) -> None:
    server = KeepAliveServer(chunked=chunked)
    async with serving(server) as base, make() as http:
        for _ in range(5):
            assert (await ivh(http, base).stat_session("s")).session_status == 1
    assert (server.requests, server.connections) == (5, 1)


async def test_a_connection_the_server_closed_is_not_reused(make: Make) -> None:
    server = KeepAliveServer(close_after=1)
    async with serving(server) as base, make() as http:
        for _ in range(3):
            await ivh(http, base).stat_session("s")
            await asyncio.sleep(0.02)  # the server's FIN arrives meanwhile
    assert (server.requests, server.connections) == (3, 3)


async def test_a_request_that_says_connection_close_is_not_reused() -> None:
    server = KeepAliveServer()
    async with serving(server) as base, _httpx_client() as http:
        for _ in range(2):
            reply = await http.post(base + "/x", content=b"{}", headers={"Connection": "close"})
            assert reply.content == BODY
    assert (server.connections, server.requests) == (2, 2)


async def test_concurrent_calls_open_their_own_connections(make: Make) -> None:
    server = KeepAliveServer()
    async with serving(server) as base, make() as http:
        client = ivh(http, base)
        await asyncio.gather(*(client.stat_session("s") for _ in range(10)))
        await asyncio.gather(*(client.stat_session("s") for _ in range(10)))
    assert server.requests == 20 and server.connections <= 10


async def test_refused_connection_is_never_sent(make: Make) -> None:
    with contextlib.closing(__import__("socket").socket()) as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    async with make() as http:
        with pytest.raises(UpstreamError) as info:
            await ivh(http, f"http://127.0.0.1:{port}").stat_session("s")
    assert info.value.code == "upstream_unavailable"
    assert isinstance(info.value.__cause__, httpx.ConnectError) and never_sent(info.value)


async def test_tls_verifies_the_server_and_then_works(make: Make) -> None:
    ca = trustme.CA()
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1").configure_cert(server_ctx)
    server = KeepAliveServer()
    trusting = ssl.create_default_context()
    ca.configure_trust(trusting)
    async with serving(server, server_ctx) as base:
        async with make() as http:
            with pytest.raises(UpstreamError) as info:
                await ivh(http, base).stat_session("s")  # the system store: unknown CA
        refused = info.value.__cause__
        assert isinstance(refused, httpx.ConnectError)
        assert isinstance(refused.__cause__, ssl.SSLCertVerificationError)
        assert server.requests == 0
        async with make(LeanTransport(ssl_context=trusting)) as http:
            assert (await ivh(http, base).stat_session("s")).session_status == 1
            assert (await ivh(http, base).stat_session("s")).session_status == 1
        assert (server.requests, server.connections) == (2, 1)  # kept alive over TLS


async def test_a_cancelled_call_leaves_no_connection_to_reuse(make: Make) -> None:
    async with emulator() as emu, make() as http:
        await _warm(emu, http)
        await emu_fault(emu, http)
        task = asyncio.create_task(ivh(http, emu.base_url).list_sessions())
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await _list(emu, http) == []  # a fresh connection answers the next call


async def test_unsupported_scheme(make: Make) -> None:
    async with make() as http:
        with pytest.raises(UpstreamError) as info:
            await ivh(http, "ftp://127.0.0.1").stat_session("s")
    assert isinstance(info.value.__cause__, httpx.UnsupportedProtocol)
    assert not info.value.retryable


def test_request_target_and_host_header_from_the_url() -> None:
    assert _split("https://gw.tvs.qq.com/v2/ivh/x") == (
        ("https", "gw.tvs.qq.com", 443),
        "/v2/ivh/x",
        b"gw.tvs.qq.com",
    )
    assert _split("http://u:p@127.0.0.1:8080/a?b=1") == (
        ("http", "127.0.0.1", 8080),
        "/a?b=1",
        b"127.0.0.1:8080",
    )
    assert _split("https://[::1]:443") == (("https", "::1", 443), "/", b"[::1]")
    with pytest.raises(httpx.UnsupportedProtocol):
        _split("ws://host/x")


async def test_lean_client_sends_a_framed_signed_post() -> None:
    heads: list[bytes] = []

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        heads.append(await read_request(reader))
        writer.write(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(BODY), BODY))
        await writer.drain()
        writer.close()

    async with answering(handle) as base, LeanClient(5) as http:
        assert (await ivh(http, base).stat_session("s")).session_status == 1
    port = int(base.rsplit(":", 1)[1])
    request_line, *lines = heads[0].split(b"\r\n\r\n")[0].split(b"\r\n")
    assert request_line.startswith(
        b"POST /v2/ivh/sessionmanager/sessionmanagerservice/statsession?appkey=a&timestamp="
    )
    assert b"&signature=" in request_line and request_line.endswith(b" HTTP/1.1")
    headers = dict(line.lower().split(b": ", 1) for line in lines)
    assert headers[b"host"] == b"127.0.0.1:%d" % port
    assert headers[b"content-type"] == b"application/json;charset=utf-8"
    assert b'"SessionId":"s"' in heads[0].split(b"\r\n\r\n", 1)[1]


def test_never_sent_follows_the_transport_errors() -> None:
    err = RuntimeError("x")
    err.__cause__ = httpx.ConnectError("no")
    assert never_sent(err)
    err.__cause__ = httpx.ReadTimeout("late")
    assert not never_sent(err)


async def _warm(emu: Emulator, http: httpx.AsyncClient) -> None:
    await _list(emu, http)


async def _list(emu: Emulator, http: httpx.AsyncClient) -> list[object]:
    cfg = emu.config
    client = IvhClient(
        http, base_url=emu.base_url, appkey=cfg.appkey, access_token=cfg.access_token, retry=FAST
    )
    return list(await client.list_sessions())


async def emu_fault(emu: Emulator, http: httpx.AsyncClient) -> None:
    spec = {"path": "listsessionofuin", "count": 1, "latency_ms": 2000}
    (await http.post(emu.base_url + "/emulator/faults", json=spec)).raise_for_status()


async def test_a_gzip_encoded_answer_is_decoded(make: Make) -> None:
    body = gzip.compress(BODY)

    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(
            b"HTTP/1.1 200 OK\r\nContent-Encoding: gzip\r\nContent-Length: %d\r\n\r\n%s"
            % (len(body), body)
        )
        await writer.drain()
        writer.close()

    async with answering(handle) as base, make() as http:
        assert (await ivh(http, base).stat_session("s")).session_status == 1


async def test_aclose_closes_a_connection_in_use(make: Make) -> None:
    async with emulator() as emu:
        transport = LeanTransport()
        http = make(transport)
        await emu_fault(emu, http)  # the next listing answers after 2 s
        call = asyncio.create_task(_list(emu, http))
        await asyncio.sleep(0.2)
        await transport.aclose()
        with pytest.raises(UpstreamError):
            await call
        await http.aclose()


async def test_an_empty_gzip_502_is_judged_by_its_status(make: Make) -> None:
    async def handle(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, asyncio.IncompleteReadError):
            while True:
                await read_request(reader)
                writer.write(
                    b"HTTP/1.1 502 Bad Gateway\r\nContent-Encoding: gzip\r\n"
                    b"Content-Length: 0\r\n\r\n"
                )
                await writer.drain()
        writer.close()

    async with answering(handle) as base, make() as http:
        with pytest.raises(UpstreamError) as info:
            await ivh(http, base).stat_session("s")
    assert info.value.http_status == 502 and info.value.retryable


def test_a_path_with_spaces_or_non_ascii_is_escaped() -> None:
    assert _split("http://h/a b/é?x=1")[1] == "/a%20b/%C3%A9?x=1"
