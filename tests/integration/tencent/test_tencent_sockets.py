"""The clients over real sockets: refused, silent, real and generated answers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
from collections.abc import AsyncIterator, Awaitable, Callable

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.core.observe import CallRecord
from bridge.errors import UpstreamError
from bridge.tencent.desk import DeskClient
from bridge.tencent.ivh import IvhClient
from bridge.tencent.retry import RetryPolicy
from bridge.tencent.session import HttpSession

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, deadline=5.0)
TIMEOUT = 0.3
MakeHttp = Callable[[], HttpSession]


@pytest.fixture
def make_http(fast_path: bool) -> MakeHttp:
    """The bridge's session, as the composition root builds it, with a short timeout."""
    return lambda: HttpSession(fast_path=fast_path, timeout=TIMEOUT)


class Records(list[CallRecord]):
    """A `CallObserver` keeping every record."""

    def __call__(self, record: CallRecord, /) -> None:
        self.append(record)


def _closed_port() -> int:
    """A port that refuses connections: bound, then closed."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


class TinyServer:
    """An HTTP/1.1 server on port 0: counts requests, answers `reply` (JSON of a dict, bytes as
    they are, or never, if None; `drop`: closes the connection once it has read the request)."""

    def __init__(self, reply: dict[str, object] | bytes | None, *, drop: bool = False) -> None:
        self.reply = reply
        self.drop = drop
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)
        try:
            await self._serve(reader, writer)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
        self.requests.append(head + await reader.readexactly(length))
        if self.drop:
            return
        if self.reply is None:
            await reader.read()  # silent: wait until the client gives up
            return
        body = self.reply if isinstance(self.reply, bytes) else json.dumps(self.reply).encode()
        status = f"HTTP/1.1 200 OK\r\nContent-Length: {len(body)}\r\nConnection: close\r\n"
        writer.write(status.encode() + b"Content-Type: application/json\r\n\r\n" + body)
        await writer.drain()


@contextlib.asynccontextmanager
async def serving(
    reply: dict[str, object] | bytes | None, *, drop: bool = False
) -> AsyncIterator[tuple[TinyServer, str]]:
    """Run a TinyServer; yield it and its base URL; close every connection on exit."""
    tiny = TinyServer(reply, drop=drop)
    server = await asyncio.start_server(tiny.handle, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        yield tiny, f"http://127.0.0.1:{port}"
    finally:
        server.close()
        for writer in tiny.writers:
            writer.close()
        await server.wait_closed()
        await asyncio.sleep(0)


def _desk(http: HttpSession, base: str, records: Records) -> DeskClient:
    return DeskClient(
        http, base_url=base, sdkappid=1, identifier="admin", secret_key="k", retry=FAST,
        observer=records,
    )  # fmt: skip


def _ivh(http: HttpSession, base: str, records: Records) -> IvhClient:
    return IvhClient(
        http, base_url=base, appkey="a", access_token="t", retry=FAST, observer=records
    )


async def _fails(call: Callable[[], Awaitable[object]]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await call()
    return info.value


async def test_send_stream_msg_is_retried_on_connection_refused(make_http: MakeHttp) -> None:
    records = Records()
    base = f"http://127.0.0.1:{_closed_port()}"
    async with make_http() as http:
        client = _desk(http, base, records)
        error = await _fails(lambda: client.send_stream_msg(session_id="s", chunk="c"))
    assert (error.code, error.retryable) == ("upstream_unavailable", True)
    assert [(r.outcome, r.attempts) for r in records] == [("upstream_unavailable", 3)]


async def test_ivh_is_retried_on_connection_refused(make_http: MakeHttp) -> None:
    records = Records()
    async with make_http() as http:
        client = _ivh(http, f"http://127.0.0.1:{_closed_port()}", records)
        await _fails(lambda: client.stat_session("m1"))
    assert [r.attempts for r in records] == [3]


async def test_send_stream_msg_is_sent_once_when_the_server_is_silent(make_http: MakeHttp) -> None:
    records = Records()
    async with serving(None) as (server, base), make_http() as http:
        client = _desk(http, base, records)
        error = await _fails(lambda: client.send_stream_msg(session_id="s", chunk="c"))
    assert error.code == "timeout"
    assert len(server.requests) == 1


async def test_an_idempotent_call_is_retried_when_the_server_is_silent(make_http: MakeHttp) -> None:
    records = Records()
    async with serving(None) as (server, base), make_http() as http:
        client = _ivh(http, base, records)
        error = await _fails(lambda: client.stat_session("m1"))
    assert error.code == "timeout"
    assert len(server.requests) == 3


async def test_send_stream_msg_is_sent_once_when_the_server_drops_it(make_http: MakeHttp) -> None:
    """Read, then the connection closed without an answer: it may have been applied."""
    records = Records()
    async with serving(None, drop=True) as (server, base), make_http() as http:
        client = _desk(http, base, records)
        error = await _fails(lambda: client.send_stream_msg(session_id="s", chunk="c"))
    assert (error.code, error.retryable) == ("upstream_unavailable", True)
    assert len(server.requests) == 1
    assert [r.attempts for r in records] == [1]


async def test_an_idempotent_call_is_retried_when_the_server_drops_it(make_http: MakeHttp) -> None:
    async with serving(None, drop=True) as (server, base), make_http() as http:
        error = await _fails(lambda: _ivh(http, base, Records()).stat_session("m1"))
    assert error.code == "upstream_unavailable"
    assert len(server.requests) == 3


async def test_a_real_answer_is_parsed(make_http: MakeHttp) -> None:
    reply: dict[str, object] = {
        "ActionStatus": "OK",
        "ErrorInfo": "",
        "ErrorCode": 0,
        "SessionId": "s",
        "CurrentState": "Not in session",
        "AgentId": "",
    }
    async with serving(reply) as (server, base), make_http() as http:
        state = await _desk(http, base, Records()).get_session_state(session_id="s")
    assert (state.state, state.raw_state) == ("not_in_session", "Not in session")
    [request] = server.requests
    assert request.startswith(b"POST /v4/desk_http_svc/get_session_state?sdkappid=1&")
    assert request.endswith(b'{"SessionId":"s"}')


@pytest.mark.parametrize(
    "sessions", [["x"], [1], [None], [{"SessionId": 5}], [{"SessionId": "ok"}, []], "many"]
)
async def test_a_listing_with_a_malformed_entry_is_a_bad_reply(
    make_http: MakeHttp, sessions: object
) -> None:
    """Not a TypeError out of the poll loop: an entry that is no object is refused like one
    with a mistyped field."""
    reply: dict[str, object] = {"Header": {"Code": 0}, "Payload": {"Sessions": sessions}}
    async with serving(reply) as (_, base), make_http() as http:
        error = await _fails(lambda: _ivh(http, base, Records()).list_sessions())
    assert error.code == "upstream_error"
    assert "unexpected response" in error.message


async def test_a_listing_is_parsed(make_http: MakeHttp) -> None:
    entry = {"SessionId": "s1", "SessionStatus": 1, "UserId": "u", "IsSessionStarted": True}
    reply: dict[str, object] = {"Header": {"Code": 0}, "Payload": {"Sessions": [entry]}}
    async with serving(reply) as (_, base), make_http() as http:
        [info] = await _ivh(http, base, Records()).list_sessions()
    assert (info.session_id, info.session_status, info.user_id) == ("s1", 1, "u")
    assert info.is_session_started


@pytest.mark.parametrize(
    "code", ["--5", "\u00b2", "1-", "", " ", "0x10", "1" * 5000, 1.5, [0], None]
)
async def test_an_odd_business_code_is_a_bad_reply(make_http: MakeHttp, code: object) -> None:
    """A code that is no integer: refused as a bad reply by both clients, never a ValueError
    out of the call (the poll loop would have restarted the IVH feature with it)."""
    ivh_reply: dict[str, object] = {"Header": {"Code": code}, "Payload": {"SessionId": "m1"}}
    async with serving(ivh_reply) as (_, base), make_http() as http:
        error = await _fails(lambda: _ivh(http, base, Records()).stat_session("m1"))
    assert error.code == "upstream_error"
    desk_reply: dict[str, object] = {"ActionStatus": "OK", "ErrorCode": code, "SessionId": "s"}
    async with serving(desk_reply) as (_, base), make_http() as http:
        error = await _fails(lambda: _desk(http, base, Records()).get_session_state(session_id="s"))
    assert error.code == "upstream_error"


@pytest.mark.parametrize("code", ["0", " 0 ", 0, "-0"])
async def test_a_zero_code_in_any_spelling_is_success(make_http: MakeHttp, code: object) -> None:
    reply: dict[str, object] = {"ActionStatus": "OK", "ErrorCode": code, "CurrentState": "Queuing"}
    async with serving(reply) as (_, base), make_http() as http:
        state = await _desk(http, base, Records()).get_session_state(session_id="s")
    assert state.raw_state == "Queuing"


async def test_a_reply_nested_too_deep_is_a_bad_reply(make_http: MakeHttp) -> None:
    """Deeper than the JSON parser's recursion limit: a reply that does not parse."""
    nested = b'{"Header": {"Code": 0}, "Payload": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"
    async with serving(nested) as (_, base), make_http() as http:
        error = await _fails(lambda: _ivh(http, base, Records()).stat_session("m1"))
    assert error.code == "upstream_error"


_ANY_JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner),
    max_leaves=12,
)
_CODE = (
    st.sampled_from([0, "0", 1, 100005, 141005, 70001, -1, "x", None])
    | st.text(alphabet=" -+0123456789\u00b2\u0661", max_size=4)
    | _ANY_JSON
)
_IVH_PAYLOAD = st.fixed_dictionaries(
    {},
    optional={
        "SessionId": _ANY_JSON | st.just("m1"),
        "SessionStatus": _ANY_JSON | st.sampled_from([1, 2, 3, "1"]),
        "Sessions": _ANY_JSON
        | st.lists(_ANY_JSON, min_size=1, max_size=3)
        | st.lists(
            st.dictionaries(
                st.sampled_from(
                    ["SessionId", "SessionStatus", "UserId", "IsSessionStarted", "DriverType"]
                ),
                _ANY_JSON,
            )
        ),
        "PlayStreamAddr": _ANY_JSON,
    },
)


@pytest.mark.parametrize("fast_path", [True, False], ids=["fast-path", "aiohttp"])  # not a fixture
@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    code=st.sampled_from([0, "0"]) | _CODE,
    payload=_IVH_PAYLOAD | _ANY_JSON,
    desk=st.dictionaries(
        st.sampled_from(
            [
                "ActionStatus",
                "ErrorCode",
                "ErrorInfo",
                "SessionId",
                "CurrentState",
                "AgentId",
                "MsgKey",
            ]
        ),
        _ANY_JSON | _CODE,
    ),
)
def test_any_reply_is_an_answer_or_an_upstream_error(
    fast_path: bool, code: object, payload: object, desk: dict[str, object]
) -> None:
    """Whatever JSON the gateway answers, each client call returns or raises UpstreamError:
    nothing else escapes into the bridge (the poll loop, an action, a channel)."""

    async def ivh_calls(client: IvhClient) -> None:
        for call in (
            lambda: client.stat_session("m1"),
            client.list_sessions,
            lambda: client.create_session(
                virtualman_project_id="p", user_id="u", protocol="webrtc", driver_type=1
            ),
            lambda: client.close_session("m1"),
        ):
            with contextlib.suppress(UpstreamError):
                await call()

    async def desk_calls(client: DeskClient) -> None:
        for call in (
            lambda: client.get_session_state(session_id="s"),
            lambda: client.send_stream_msg(session_id="s", chunk="c"),
        ):
            with contextlib.suppress(UpstreamError):
                await call()

    async def run() -> None:
        reply = {"Header": {"Code": code}, "Payload": payload}
        async with (
            serving(reply) as (_, base),
            HttpSession(fast_path=fast_path, timeout=TIMEOUT) as http,
        ):
            await ivh_calls(_ivh(http, base, Records()))
        async with (
            serving(desk) as (_, base),
            HttpSession(fast_path=fast_path, timeout=TIMEOUT) as http,
        ):
            await desk_calls(_desk(http, base, Records()))

    asyncio.run(run())
