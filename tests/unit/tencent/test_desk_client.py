"""DeskClient against recorded real-shaped replies (docs/protocol.md B.1-B.4, B.7)."""

from __future__ import annotations

import json

import pytest

from bridge.errors import RequestError, UpstreamError
from bridge.tencent.codes import DESK_CODES
from bridge.tencent.desk import MAX_BODY_BYTES, stream_body_size, stream_retryable
from bridge.tencent.retry import RetryPolicy
from tests.unit.tencent.tencent_fakes import (
    FAST,
    IDENTIFIER,
    SDKAPPID,
    SECRET_KEY,
    Records,
    Script,
    Step,
    Ticker,
    connect_timeout,
    decode_usersig,
    desk_client,
    desk_err,
    desk_ok,
    dropped,
    expected_tls_sig,
    garbled,
    read_timeout,
    refused,
    reset,
    truncated,
)

SID = "fd8a2e30-54de-4e40-bcaf-02718409c5cf"
MSG_KEY = "124_1600045926_716f784b2bbd6ce9415027715"

# docs/protocol.md B.3, B.4, B.7 and the brief of issue 3, independent of bridge.tencent.codes.
EXPECTED: dict[int, tuple[str, bool]] = {
    20001: ("invalid_payload", False),
    20002: ("auth_failed", False),
    20003: ("upstream_error", False),
    20004: ("upstream_error", True),
    20005: ("upstream_error", True),
    20006: ("upstream_error", False),
    60002: ("upstream_error", False),
    60003: ("invalid_payload", False),
    60004: ("auth_failed", False),
    60005: ("auth_failed", False),
    60006: ("auth_failed", False),
    60007: ("rate_limited", True),
    60008: ("upstream_error", True),
    60009: ("upstream_error", False),
    60010: ("auth_failed", False),
    60011: ("rate_limited", True),
    60012: ("upstream_error", False),
    60013: ("upstream_error", True),
    60014: ("upstream_error", True),
    60015: ("upstream_error", False),
    60016: ("auth_failed", False),
    60017: ("upstream_error", False),
    60018: ("rate_limited", True),
    60019: ("rate_limited", True),
    60020: ("upstream_error", False),
    60021: ("auth_failed", False),
    70001: ("auth_failed", False),
    70003: ("auth_failed", False),
    70009: ("auth_failed", False),
    70013: ("auth_failed", False),
    70014: ("auth_failed", False),
    70016: ("auth_failed", False),
    70020: ("auth_failed", False),
    70050: ("rate_limited", True),
    70051: ("auth_failed", False),
    70107: ("auth_failed", False),
    90001: ("invalid_payload", False),
    90002: ("upstream_error", False),
    90005: ("upstream_error", False),
    90007: ("upstream_error", False),
    90009: ("auth_failed", False),
    90010: ("upstream_error", False),
    93000: ("payload_too_large", False),
    141000: ("upstream_error", False),
    141002: ("upstream_error", True),
    141004: ("invalid_payload", False),
    141005: ("session_not_found", False),
    141006: ("invalid_payload", False),
    99999: ("upstream_error", False),
}
# Retried by the backoff loop within the default 30 s deadline (70050 needs a 60 s wait).
LOOP_RETRIED = {code for code, (_, retryable) in EXPECTED.items() if retryable} - {70050}
REGENERATES = {60004, 60005, 70001, 70003}  # B.7: regenerate the UserSig, then no


def test_every_documented_code_is_expected() -> None:
    assert set(DESK_CODES) <= set(EXPECTED)


def _calls_for(code: int) -> int:
    if code in LOOP_RETRIED:
        return FAST.attempts
    return 2 if code in REGENERATES else 1


@pytest.mark.parametrize(("code", "expected"), sorted(EXPECTED.items()))
async def test_code_maps_to_spec_error_and_retry_decision(
    code: int, expected: tuple[str, bool]
) -> None:
    script = Script(desk_err(code))
    with pytest.raises(UpstreamError) as info:
        await desk_client(script, clock=Ticker()).get_session_state(session_id=SID)
    error = info.value
    assert (error.code, error.retryable) == expected
    assert (error.upstream_code, error.http_status) == (code, 200)
    assert script.calls == _calls_for(code)
    assert "get_session_state" in error.message


@pytest.mark.parametrize(
    ("step", "code", "retryable"),
    [
        ((502, "<html>Bad Gateway</html>"), "upstream_unavailable", True),
        ((401, ""), "auth_failed", False),
        ((429, ""), "rate_limited", True),
        ((404, ""), "upstream_error", False),
        ((200, "not json"), "upstream_error", False),
        ((200, {"ActionStatus": "FAIL", "ErrorCode": 0}), "upstream_error", False),
        (read_timeout, "timeout", True),
        (refused, "upstream_unavailable", True),
    ],
)
async def test_http_failures_map_to_spec_errors(step: Step, code: str, retryable: bool) -> None:
    script = Script(step)
    with pytest.raises(UpstreamError) as info:
        await desk_client(script).end_session(SID)
    assert (info.value.code, info.value.retryable) == (code, retryable)
    assert script.calls == (FAST.attempts if retryable else 1)


async def test_a_502_carrying_an_envelope_uses_its_code() -> None:
    script = Script((502, desk_err(141005)))
    with pytest.raises(UpstreamError) as info:
        await desk_client(script).end_session(SID)
    assert (info.value.code, info.value.upstream_code, info.value.http_status) == (
        "session_not_found",
        141005,
        502,
    )


async def test_the_query_carries_a_valid_usersig_and_a_fresh_random() -> None:
    script = Script((503, ""), desk_ok(), desk_ok())
    client = desk_client(script)
    await client.end_session(SID)
    await client.end_session(SID)
    randoms = set()
    for request in script.requests:
        assert request.url.path == "/v4/desk_http_svc/end_session"
        params = dict(request.url.query)
        assert list(params) == ["sdkappid", "identifier", "usersig", "random", "contenttype"]
        assert (params["sdkappid"], params["identifier"]) == (str(SDKAPPID), IDENTIFIER)
        assert params["contenttype"] == "json"
        assert 0 <= int(params["random"]) < 2**32
        randoms.add(params["random"])
        document = decode_usersig(params["usersig"])
        assert (document["TLS.identifier"], document["TLS.sdkappid"]) == (IDENTIFIER, SDKAPPID)
        assert document["TLS.expire"] == 86400
        assert document["TLS.sig"] == expected_tls_sig(document, SECRET_KEY)
    assert len(randoms) == 3
    assert len({r.url.query["usersig"] for r in script.requests}) == 1  # cached


async def test_get_session_state_by_session_id() -> None:
    reply = desk_ok(SessionId=SID, CurrentState="Agent", AgentId="test@qq.com")
    script = Script(reply)
    state = await desk_client(script).get_session_state(session_id=SID)
    assert (state.session_id, state.state, state.raw_state, state.agent_id) == (
        SID,
        "agent",
        "Agent",
        "test@qq.com",
    )
    assert script.body() == {"SessionId": SID}
    assert script.requests[0].url.path == "/v4/desk_http_svc/get_session_state"


async def test_get_session_state_by_user() -> None:
    script = Script(desk_ok(SessionId="a-b-c-d-e", CurrentState="Chatbot", AgentId=""))
    state = await desk_client(script).get_session_state(
        client_user_id="user1", customer_service_id="@customer_service_account"
    )
    assert (state.session_id, state.state, state.agent_id) == ("a-b-c-d-e", "chatbot", None)
    assert script.body() == {
        "ClientUserId": "user1",
        "CustomerServiceId": "@customer_service_account",
    }


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"session_id": SID, "client_user_id": "u", "customer_service_id": "c"},
        {"session_id": SID, "client_user_id": "u"},
        {"client_user_id": "u"},
        {"customer_service_id": "c"},
    ],
)
async def test_get_session_state_needs_exactly_one_form(kwargs: dict[str, str]) -> None:
    script = Script(desk_ok())
    with pytest.raises(RequestError) as info:
        await desk_client(script).get_session_state(**kwargs)
    assert info.value.code == "invalid_payload"
    assert script.calls == 0


@pytest.mark.parametrize(
    ("raw", "state"),
    [
        ("NotInSession", "not_in_session"),
        ("Not in session", "not_in_session"),
        ("Chatbot", "chatbot"),
        ("WaitingForAgentAnswering", "waiting_for_agent"),
        ("Queueing", "queuing"),
        ("Queuing", "queuing"),
        ("Agent", "agent"),
        ("SomethingNew", "unknown"),
        (None, "unknown"),
    ],
)
async def test_current_state_spellings_normalise(raw: str | None, state: str) -> None:
    script = Script(desk_ok(SessionId=SID, CurrentState=raw))
    result = await desk_client(script).get_session_state(session_id=SID)
    assert (result.state, result.raw_state) == (state, raw)


async def test_send_stream_msg_first_then_following_chunks() -> None:
    script = Script(desk_ok(MsgKey=MSG_KEY), desk_ok(), desk_ok())
    client = desk_client(script)
    key = await client.send_stream_msg(session_id=SID, chunk="Hello, ")
    assert key == MSG_KEY
    assert await client.send_stream_msg(session_id=SID, chunk="this is ", msg_key=key) == key
    last = await client.send_stream_msg(
        session_id=SID, chunk="Tencent Cloud.", msg_key=key, finish=True, cloud_custom_data="x"
    )
    assert last == MSG_KEY
    assert [script.body(n) for n in range(3)] == [
        {"SessionId": SID, "Chunk": "Hello, "},
        {"SessionId": SID, "Chunk": "this is ", "MsgKey": MSG_KEY},
        {
            "SessionId": SID,
            "Chunk": "Tencent Cloud.",
            "MsgKey": MSG_KEY,
            "Finish": 1,
            "CloudCustomData": "x",
        },
    ]
    assert script.requests[0].url.path == "/v4/desk_http_svc/send_stream_msg"


async def test_stream_body_size_is_the_exact_body_size() -> None:
    script = Script(desk_ok())
    chunk = 'naïve "quoted" 你好\n'
    await desk_client(script).send_stream_msg(session_id=SID, chunk=chunk, msg_key="k", finish=True)
    assert stream_body_size(SID, chunk, "k", True) == len(script.requests[0].content)
    expected = json.dumps(
        {"SessionId": SID, "Chunk": chunk, "MsgKey": "k", "Finish": 1},
        ensure_ascii=False,
        separators=(",", ":"),
    )
    assert stream_body_size(SID, chunk, "k", True) == len(expected.encode())


async def test_the_12_kb_limit_is_enforced_before_calling() -> None:
    fill = MAX_BODY_BYTES - stream_body_size(SID, "", MSG_KEY)
    script = Script(desk_ok())
    client = desk_client(script)
    await client.send_stream_msg(session_id=SID, chunk="a" * fill, msg_key=MSG_KEY)
    assert len(script.requests[0].content) == MAX_BODY_BYTES
    with pytest.raises(RequestError) as info:
        await client.send_stream_msg(session_id=SID, chunk="a" * (fill + 1), msg_key=MSG_KEY)
    assert info.value.code == "payload_too_large"
    with pytest.raises(RequestError):  # 3 UTF-8 bytes per character
        await client.send_stream_msg(session_id=SID, chunk="你" * (fill // 3 + 1), msg_key=MSG_KEY)
    assert script.calls == 1


@pytest.mark.parametrize(
    ("step", "code"),
    [
        (read_timeout, "timeout"),
        (dropped, "upstream_unavailable"),
        (reset, "upstream_unavailable"),
        (garbled, "upstream_unavailable"),
        (truncated, "upstream_unavailable"),
        ((503, ""), "upstream_unavailable"),
        ((502, "<html/>"), "upstream_unavailable"),
        ((429, ""), "rate_limited"),
    ],
)
async def test_send_stream_msg_is_not_retried_when_it_may_have_applied(
    step: Step, code: str
) -> None:
    script = Script(step, desk_ok(MsgKey=MSG_KEY))
    with pytest.raises(UpstreamError) as info:
        await desk_client(script).send_stream_msg(session_id=SID, chunk="x")
    assert info.value.code == code
    assert script.calls == 1


@pytest.mark.parametrize(
    "first",
    [
        refused,
        connect_timeout,
        desk_err(141002),
        desk_err(20004),
        desk_err(60007),
        (503, desk_err(20005)),
        desk_err(70001),
    ],
)
async def test_send_stream_msg_is_retried_when_it_cannot_have_applied(first: Step) -> None:
    script = Script(first, desk_ok(MsgKey=MSG_KEY))
    key = await desk_client(script, clock=Ticker()).send_stream_msg(session_id=SID, chunk="x")
    assert key == MSG_KEY
    assert script.calls == 2
    assert script.body(0) == script.body(1)


def test_stream_retryable_needs_an_upstream_code_or_an_unsent_request() -> None:
    plain = UpstreamError("x", code="timeout", retryable=True)
    assert not stream_retryable(plain)
    assert stream_retryable(UpstreamError("x", retryable=True, upstream_code=141002))
    assert not stream_retryable(UpstreamError("x", retryable=False, upstream_code=141004))
    assert not stream_retryable(RuntimeError("x"))


async def test_70001_regenerates_the_usersig_once_then_retries() -> None:
    script = Script(desk_err(70001), desk_ok(SessionId=SID, CurrentState="Agent"))
    records = Records()
    client = desk_client(script, clock=Ticker(), observer=records)
    state = await client.get_session_state(session_id=SID)
    assert state.state == "agent"
    first, second = (r.url.query["usersig"] for r in script.requests)
    assert first != second
    assert decode_usersig(second)["TLS.time"] > decode_usersig(first)["TLS.time"]
    assert [(r.outcome, r.attempts, r.retries) for r in records] == [("ok", 2, 1)]


@pytest.mark.parametrize("code", [70001, 70003])
async def test_a_second_rejection_fails_with_auth_failed(code: int) -> None:
    script = Script(desk_err(code), desk_err(code), desk_ok())
    with pytest.raises(UpstreamError) as info:
        await desk_client(script, clock=Ticker()).end_session(SID)
    assert (info.value.code, info.value.upstream_code, info.value.retryable) == (
        "auth_failed",
        code,
        False,
    )
    assert script.calls == 2


async def test_the_usersig_is_regenerated_once_per_call_even_across_backoff() -> None:
    script = Script(desk_err(70001), desk_err(60007), desk_err(70001), desk_ok())
    with pytest.raises(UpstreamError) as info:
        await desk_client(script, clock=Ticker()).end_session(SID)
    assert info.value.upstream_code == 70001
    assert script.calls == 3


async def test_a_fresh_call_may_regenerate_again() -> None:
    script = Script(desk_err(70001), desk_ok(), desk_err(70001), desk_ok())
    client = desk_client(script, clock=Ticker())
    await client.end_session(SID)
    await client.end_session(SID)
    assert len({r.url.query["usersig"] for r in script.requests}) == 3


async def test_70050_is_not_retried_within_a_short_deadline() -> None:
    script = Script(desk_err(70050), desk_ok())
    with pytest.raises(UpstreamError) as info:
        await desk_client(script, retry=RetryPolicy(deadline=30.0)).end_session(SID)
    assert (info.value.code, info.value.retryable) == ("rate_limited", True)
    assert script.calls == 1


async def test_end_session_after_a_timeout_treats_not_found_as_success() -> None:
    script = Script(read_timeout, desk_err(141005))
    await desk_client(script).end_session(SID)
    assert script.calls == 2
    assert script.body() == {"SessionId": SID}


async def test_the_observer_counts_requests(caplog: pytest.LogCaptureFixture) -> None:
    records = Records()
    script = Script(desk_err(141002), desk_err(141002), desk_ok())
    await desk_client(script, observer=records).get_session_state(session_id=SID)
    assert [(r.service, r.api, r.outcome, r.attempts) for r in records] == [
        ("desk", "get_session_state", "ok", 3)
    ]


async def test_not_found_after_a_rejected_attempt_is_still_an_error() -> None:
    script = Script(desk_err(70001), desk_err(141005))
    with pytest.raises(UpstreamError) as info:
        await desk_client(script, clock=Ticker()).end_session(SID)
    assert info.value.code == "session_not_found"
    assert script.calls == 2
