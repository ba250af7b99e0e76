"""The clients' HTTP session on a real network path: TLS verification (a throwaway CA) and
proxies from the environment (a real CONNECT / forward proxy on loopback)."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import ssl
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path

import pytest
import trustme

from bridge.core.observe import CallRecord
from bridge.errors import UpstreamError
from bridge.tencent.desk import DeskClient
from bridge.tencent.retry import RetryPolicy
from bridge.tencent.session import HttpSession
from tests.support.proxy import running_proxy

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, deadline=5.0)
STATE = {"ActionStatus": "OK", "ErrorCode": 0, "SessionId": "s", "CurrentState": "Queuing"}
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "no_proxy")


class Records(list[CallRecord]):
    """A `CallObserver` keeping every record."""

    def __call__(self, record: CallRecord, /) -> None:
        self.append(record)


@pytest.fixture(autouse=True)
def no_proxy_env(monkeypatch: pytest.MonkeyPatch) -> None:
    """Start from an environment without proxies; each test sets what it checks."""
    for name in PROXY_VARS:
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.upper(), raising=False)


@pytest.fixture(scope="module")
def ca() -> trustme.CA:
    """The throwaway CA the test server's certificate comes from."""
    return trustme.CA()


def _trusting(ca: trustme.CA) -> ssl.SSLContext:
    context = ssl.create_default_context()
    ca.configure_trust(context)
    return context


class JsonServer:
    """Keep-alive HTTP/1.1 on loopback, plain or TLS: every request answered with `reply`."""

    def __init__(self) -> None:
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        body = json.dumps(STATE).encode()
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                self.requests.append(head + await reader.readexactly(length))
                writer.write(b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n")
                writer.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
                await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError, ssl.SSLError):
            pass
        finally:
            writer.close()


@contextlib.asynccontextmanager
async def serving(ca: trustme.CA | None = None) -> AsyncIterator[tuple[JsonServer, str]]:
    """A JsonServer (TLS with a certificate for 127.0.0.1 from `ca`) and its base URL."""
    tls = None
    if ca is not None:
        tls = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ca.issue_cert("127.0.0.1").configure_cert(tls)
    json_server = JsonServer()
    server = await asyncio.start_server(json_server.handle, "127.0.0.1", 0, ssl=tls)
    port = server.sockets[0].getsockname()[1]
    try:
        yield json_server, f"{'https' if tls else 'http'}://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in json_server.writers:
            writer.close()
        await server.wait_closed()


def _desk(http: HttpSession, base: str, records: Records | None = None) -> DeskClient:
    return DeskClient(
        http, base_url=base, sdkappid=1, identifier="admin", secret_key="k", retry=FAST,
        observer=records,
    )  # fmt: skip


async def _fails(call: Callable[[], Awaitable[object]]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await call()
    return info.value


async def test_https_to_a_certificate_from_a_trusted_ca(fast_path: bool, ca: trustme.CA) -> None:
    async with (
        serving(ca) as (server, base),
        HttpSession(fast_path=fast_path, timeout=2, ssl_context=_trusting(ca)) as http,
    ):
        client = _desk(http, base)
        for _ in range(3):
            state = await client.get_session_state(session_id="s")
            assert state.raw_state == "Queuing"
    assert len(server.requests) == 3
    assert len(server.writers) == 1  # kept alive


async def test_an_untrusted_certificate_is_a_clear_error_and_nothing_is_sent(
    fast_path: bool,
    ca: trustme.CA,
) -> None:
    records = Records()
    async with serving(ca) as (server, base), HttpSession(fast_path=fast_path, timeout=2) as http:
        error = await _fails(lambda: _desk(http, base, records).end_session("s"))
    assert (error.code, error.retryable) == ("upstream_unavailable", False)
    assert error.message == "Desk end_session failed: TLS certificate not trusted"
    assert "certificate verify failed" in str(error.__cause__)
    assert [r.attempts for r in records] == [1]
    assert server.requests == []


async def test_a_bridge_process_trusts_the_ca_named_by_ssl_cert_file(
    fast_path: bool, ca: trustme.CA, tmp_path: Path
) -> None:
    """The documented way to trust a private CA: `SSL_CERT_FILE` for the process."""
    pem = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(pem))
    script = (
        "import asyncio, sys\n"
        "from bridge.tencent.desk import DeskClient\n"
        "from bridge.tencent.session import http_client\n"
        "async def main():\n"
        f"    async with http_client(5.0, fast_path={fast_path}) as http:\n"
        "        client = DeskClient(http, base_url=sys.argv[1], sdkappid=1,\n"
        "                            identifier='a', secret_key='k')\n"
        "        print((await client.get_session_state(session_id='s')).raw_state)\n"
        "asyncio.run(main())\n"
    )
    async with serving(ca) as (server, base):
        for env, expected in (({}, b""), ({"SSL_CERT_FILE": str(pem)}, b"Queuing\n")):
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-c", script, base,
                env={**os.environ, **env},
                stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
            )  # fmt: skip
            out, err = await asyncio.wait_for(proc.communicate(), 30)
            assert out == expected, err.decode()[-500:]
            if not env:
                assert b"TLS certificate not trusted" in err
    assert len(server.requests) == 1


async def test_https_goes_through_the_environment_proxy_as_a_tunnel(
    fast_path: bool, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving(ca) as (server, base), running_proxy() as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        async with HttpSession(fast_path=fast_path, timeout=2, ssl_context=_trusting(ca)) as http:
            state = await _desk(http, base).get_session_state(session_id="s")
    assert state.raw_state == "Queuing"
    assert proxy.seen == [f"CONNECT {base.removeprefix('https://')}"]
    assert len(server.requests) == 1  # TLS end to end: the proxy saw no request line


async def test_http_goes_through_the_environment_proxy_as_a_forward(
    fast_path: bool,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    async with serving() as (server, base), running_proxy() as proxy:
        monkeypatch.setenv("http_proxy", proxy.url)
        async with HttpSession(fast_path=fast_path, timeout=2) as http:
            await _desk(http, base).get_session_state(session_id="s")
    [seen] = proxy.seen
    assert seen.startswith(f"POST {base}/v4/desk_http_svc/get_session_state?sdkappid=1&")
    assert server.requests[0].startswith(b"POST /v4/desk_http_svc/get_session_state?")


async def test_no_proxy_names_the_hosts_reached_directly(
    fast_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with serving() as (server, base), running_proxy() as proxy:
        monkeypatch.setenv("HTTP_PROXY", proxy.url)
        monkeypatch.setenv("NO_PROXY", "localhost,127.0.0.1")
        async with HttpSession(fast_path=fast_path, timeout=2) as http:
            await _desk(http, base).get_session_state(session_id="s")
    assert proxy.seen == []
    assert len(server.requests) == 1


async def test_a_refused_tunnel_is_never_sent_so_even_a_stream_chunk_is_retried(
    fast_path: bool, ca: trustme.CA, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = Records()
    async with serving(ca) as (server, base), running_proxy(refuse=True) as proxy:
        monkeypatch.setenv("HTTPS_PROXY", proxy.url)
        async with HttpSession(fast_path=fast_path, timeout=2, ssl_context=_trusting(ca)) as http:
            client = _desk(http, base, records)
            error = await _fails(lambda: client.send_stream_msg(session_id="s", chunk="c"))
    assert error.code == "upstream_unavailable"
    assert [r.attempts for r in records] == [FAST.attempts]
    assert len(proxy.seen) == FAST.attempts
    assert server.requests == []


async def test_an_unreachable_proxy_is_never_sent(
    fast_path: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    records = Records()
    async with running_proxy() as proxy:
        dead = proxy.url
    monkeypatch.setenv("HTTP_PROXY", dead)
    async with serving() as (server, base), HttpSession(fast_path=fast_path, timeout=2) as http:
        client = _desk(http, base, records)
        error = await _fails(lambda: client.send_stream_msg(session_id="s", chunk="c"))
    assert (error.code, error.retryable) == ("upstream_unavailable", True)
    assert [r.attempts for r in records] == [FAST.attempts]
    assert server.requests == []  # reachable directly, but the environment says: by the proxy
