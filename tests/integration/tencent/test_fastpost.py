"""The HTTP fast path against aiohttp's own request path, over real sockets.

aiohttp is the oracle: the fast path must put the same bytes on the wire, read every response
the same way, and fail with the same exceptions (the client tests in this folder also run on
both paths, through `HttpSession`).
"""

from __future__ import annotations

import asyncio
import contextlib
import gzip
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field

import aiohttp
import pytest

from bridge.tencent.fastpost import MAX_BODY, FastPoster
from bridge.tencent.session import USER_AGENT, HttpSession

JSON = {"Content-Type": "application/json;charset=utf-8"}
Reply = Callable[[int], bytes | None]  # request number -> the bytes to answer, None: hold


def ok(body: bytes = b'{"ok":1}', extra: str = "") -> bytes:
    return f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\n{extra}\r\n".encode() + body


@dataclass
class Recorder:
    """An HTTP/1.1 server that keeps connections open, records each request's bytes and the
    connection it came on, and answers with `reply`."""

    reply: Reply
    hang_up: bool = False  # close each connection after its answer, without saying so
    requests: list[tuple[int, bytes]] = field(default_factory=list)
    connections: int = 0
    closed: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        conn = self.connections
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length: ")[1].split(b"\r\n")[0])
                self.requests.append((conn, head + await reader.readexactly(length)))
                answer = self.reply(len(self.requests))
                if answer is None:
                    await reader.read()  # hold: until the client goes
                    return
                writer.write(answer)
                await writer.drain()
                if self.hang_up or b"Connection: close" in answer:
                    return
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        finally:
            self.closed += 1
            writer.close()


@contextlib.asynccontextmanager
async def recording(reply: Reply) -> AsyncIterator[tuple[Recorder, str]]:
    recorder = Recorder(reply)
    server = await asyncio.start_server(recorder.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server:
        yield recorder, f"http://127.0.0.1:{port}/v1/api"


@contextlib.asynccontextmanager
async def fast_poster(timeout: float = 2.0) -> AsyncIterator[FastPoster]:
    client_timeout = aiohttp.ClientTimeout(total=None, connect=timeout, sock_read=timeout)
    async with aiohttp.ClientSession(
        timeout=client_timeout, headers={"User-Agent": USER_AGENT}
    ) as session:
        yield FastPoster(session, timeout=client_timeout, ssl_context=True, user_agent=USER_AGENT)


async def _until(check: Callable[[], bool]) -> None:
    async with asyncio.timeout(5):
        while not check():
            await asyncio.sleep(0.01)


async def test_the_request_is_the_bytes_aiohttp_sends() -> None:
    async with (
        recording(lambda _: ok()) as (server, url),
        HttpSession(timeout=2) as library,
        fast_poster() as fast,
    ):
        for query in ("Sign=a%2Fb%3D&Timestamp=1", ""):
            assert await library.post(url, query, b'{"a":"\xc3\xa9"}', JSON) == (
                200,
                b'{"ok":1}',
            )
            assert await fast.post(url, query, b'{"a":"\xc3\xa9"}', JSON) == (200, b'{"ok":1}')
    sent = [request for _, request in server.requests]
    assert sent[0] == sent[1] and sent[2] == sent[3]
    assert sent[0].startswith(
        b"POST /v1/api?Sign=a%2Fb%3D&Timestamp=1 HTTP/1.1\r\nHost: 127.0.0.1:"
    )
    assert sent[2].startswith(b"POST /v1/api HTTP/1.1\r\n")


async def test_one_connection_carries_every_call_while_it_stays_open() -> None:
    async with recording(lambda _: ok()) as (server, url), fast_poster() as fast:
        for _ in range(5):
            assert await fast.post(url, "q=1", b"{}", JSON) == (200, b'{"ok":1}')
    assert {conn for conn, _ in server.requests} == {1}


async def test_a_response_that_closes_the_connection_is_not_reused() -> None:
    async with (
        recording(lambda _: ok(extra="Connection: close\r\n")) as (server, url),
        fast_poster() as fast,
    ):
        for _ in range(3):
            assert await fast.post(url, "q=1", b"{}", JSON) == (200, b'{"ok":1}')
    assert [conn for conn, _ in server.requests] == [1, 2, 3]


async def test_a_connection_the_server_closed_while_idle_is_replaced() -> None:
    server = Recorder(lambda _: ok(), hang_up=True)
    listener = await asyncio.start_server(server.handle, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{listener.sockets[0].getsockname()[1]}/v1/api"
    async with listener, fast_poster() as fast:
        await fast.post(url, "q=1", b"{}", JSON)
        await _until(lambda: server.closed == 1)
        await asyncio.sleep(0.1)  # the client's loop reads the FIN; the pool then drops the link
        assert await fast.post(url, "q=2", b"{}", JSON) == (200, b'{"ok":1}')
    assert [conn for conn, _ in server.requests] == [1, 2]


async def test_chunked_and_gzip_bodies_are_decoded_as_aiohttp_decodes_them() -> None:
    packed = gzip.compress(b'{"big":"' + b"x" * 5000 + b'"}')
    half = len(packed) // 2
    chunked = (
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nContent-Encoding: gzip\r\n\r\n"
        + b"%x\r\n%s\r\n%x\r\n%s\r\n0\r\n\r\n"
        % (half, packed[:half], len(packed) - half, packed[half:])
    )
    async with (
        recording(lambda _: chunked) as (_, url),
        HttpSession(timeout=2) as library,
        fast_poster() as fast,
    ):
        expected = await library.post(url, "q=1", b"{}", JSON)
        assert await fast.post(url, "q=1", b"{}", JSON) == expected
    assert expected == (200, gzip.decompress(packed))


async def test_an_interim_100_continue_is_skipped() -> None:
    answer = b"HTTP/1.1 100 Continue\r\n\r\n" + ok(b'{"final":1}')
    async with recording(lambda _: answer) as (_, url), fast_poster() as fast:
        assert await fast.post(url, "q=1", b"{}", JSON) == (200, b'{"final":1}')


async def test_an_error_status_is_returned_with_its_body() -> None:
    answer = b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 4\r\n\r\nbusy"
    async with recording(lambda _: answer) as (_, url), fast_poster() as fast:
        assert await fast.post(url, "q=1", b"{}", JSON) == (503, b"busy")


@pytest.mark.parametrize(
    "answer",
    [b"garbage\r\n\r\n", b"HTTP/1.1 200 OK\r\nContent-Length: x\r\n\r\n"],
    ids=["not-http", "bad-length"],
)
async def test_a_response_that_is_not_http_fails_as_in_aiohttp(answer: bytes) -> None:
    async def outcome(post: Callable[[], Awaitable[object]]) -> type[BaseException]:
        with pytest.raises(aiohttp.ClientError) as caught:
            await post()
        return caught.type

    async with (
        recording(lambda _: answer) as (_, url),
        HttpSession(timeout=2) as library,
        fast_poster() as fast,
    ):
        expected = await outcome(lambda: library.post(url, "q=1", b"{}", JSON))
        assert await outcome(lambda: fast.post(url, "q=1", b"{}", JSON)) is expected
    assert issubclass(expected, aiohttp.ClientResponseError)


async def test_a_call_cut_off_midway_closes_its_connection() -> None:
    async with (
        recording(lambda n: None if n == 1 else ok()) as (server, url),
        fast_poster() as fast,
    ):
        call = asyncio.create_task(fast.post(url, "q=1", b"{}", JSON))
        await _until(lambda: len(server.requests) == 1)
        call.cancel()
        with pytest.raises(asyncio.CancelledError):
            await call
        await _until(lambda: server.closed == 1)  # the held connection is gone, not pooled
        assert await fast.post(url, "q=2", b"{}", JSON) == (200, b'{"ok":1}')
    assert [conn for conn, _ in server.requests] == [1, 2]


async def test_a_silent_server_is_a_read_timeout() -> None:
    async with recording(lambda _: None) as (_, url), fast_poster(timeout=0.2) as fast:
        with pytest.raises(aiohttp.SocketTimeoutError):
            await fast.post(url, "q=1", b"{}", JSON)


async def test_what_a_request_line_cannot_carry_is_left_to_aiohttp() -> None:
    async with fast_poster() as fast:
        assert fast.accepts("https://gw.tvs.qq.com/v2/x", "a=1&b=%2F", b"{}", JSON)
        assert fast.accepts("http://[::1]:8080/x", "", b"x" * MAX_BODY, JSON)
        refused = [
            ("https://gw.tvs.qq.com/v2/x", "a=b c", b"{}", JSON),  # a space
            ("https://gw.tvs.qq.com/v2/x", "a=\u00e9", b"{}", JSON),  # not ASCII
            ("https://gw.tvs.qq.com/v2/x", "a=1\r\nX: y", b"{}", JSON),  # a header smuggled in
            ("https://gw.tvs.qq.com/v2/x", "", b"{}", {"X-A": "1\r\nX-B: 2"}),
            ("https://gw.tvs.qq.com/v2/x", "", b"x" * (MAX_BODY + 1), JSON),  # a large body
            ("https://gw.tvs.qq.com/v2/x?k=v", "", b"{}", JSON),  # a query in the URL
            ("ftp://gw.tvs.qq.com/x", "", b"{}", JSON),
            ("https://gw.tvs.qq.com/a b", "", b"{}", JSON),
        ]
        assert [fast.accepts(*request) for request in refused] == [False] * len(refused)


async def test_an_ipv6_host_is_sent_in_brackets() -> None:
    recorder = Recorder(lambda _: ok())
    server = await asyncio.start_server(recorder.handle, "::1", 0)
    port = server.sockets[0].getsockname()[1]
    async with server, fast_poster() as fast:
        assert await fast.post(f"http://[::1]:{port}/x", "", b"{}", JSON) == (200, b'{"ok":1}')
    assert f"\r\nHost: [::1]:{port}\r\n".encode() in recorder.requests[0][1]
