"""IvhClient against recorded real-shaped replies (docs/protocol.md A.1-A.3, A.7)."""

from __future__ import annotations

import re
import time
from typing import Any
from urllib.parse import quote

import pytest

from bridge.errors import UpstreamError
from bridge.tencent.codes import IVH_CODES
from bridge.tencent.retry import RetryPolicy
from bridge.tencent.signing import ivh_signature
from tests.unit.tencent.tencent_fakes import (
    APPKEY,
    FAST,
    TOKEN,
    Records,
    Script,
    Step,
    bad_scheme,
    connect_timeout,
    dropped,
    garbled,
    ivh_client,
    ivh_err,
    ivh_ok,
    read_timeout,
    refused,
    reset,
    truncated,
    untrusted,
)

PATH = "/v2/ivh/sessionmanager/sessionmanagerservice/"
SESSION = {"SessionId": "m123", "SessionStatus": 3, "PlayStreamAddr": "rtmp://live/m123"}

# docs/protocol.md A.7 and the brief of issue 3, written out independently of bridge.tencent.codes.
EXPECTED: dict[int, tuple[str, bool]] = {
    -101000: ("upstream_error", True),
    -101001: ("upstream_error", True),
    -101002: ("upstream_error", True),
    -111001: ("upstream_error", True),
    -111002: ("upstream_error", False),
    -111003: ("upstream_error", False),
    -111004: ("upstream_error", False),
    -111005: ("upstream_error", False),
    100001: ("invalid_payload", False),
    100005: ("auth_failed", False),
    100008: ("rate_limited", False),
    100012: ("rate_limited", True),
    100014: ("rate_limited", False),
    100015: ("upstream_error", False),
    110013: ("session_closed", False),
    110014: ("upstream_error", False),
    110015: ("upstream_error", False),
    110016: ("upstream_error", False),
    110018: ("session_not_found", False),
    110021: ("upstream_error", False),
    110022: ("session_closed", False),
    -100000: ("upstream_error", False),  # the doc's example code, in no table
    100000: ("upstream_error", False),
    424242: ("upstream_error", False),
}


def test_every_documented_code_is_expected() -> None:
    assert set(IVH_CODES) <= set(EXPECTED)


async def _stat_error(*steps: Step, retry: RetryPolicy = FAST) -> tuple[UpstreamError, Script]:
    script = Script(*steps)
    with pytest.raises(UpstreamError) as info:
        await ivh_client(script, retry=retry).stat_session("m123")
    return info.value, script


@pytest.mark.parametrize(("code", "expected"), sorted(EXPECTED.items()))
async def test_code_maps_to_spec_error_and_retry_decision(
    code: int, expected: tuple[str, bool]
) -> None:
    error, script = await _stat_error(ivh_err(code))
    assert (error.code, error.retryable) == expected
    assert (error.upstream_code, error.http_status) == (code, 200)
    assert script.calls == (FAST.attempts if expected[1] else 1)
    assert "statsession" in error.message
    assert str(code) in error.message


@pytest.mark.parametrize(
    ("step", "code", "retryable", "status"),
    [
        ((500, "oops"), "upstream_unavailable", True, 500),
        ((502, "<html>bad gateway</html>"), "upstream_unavailable", True, 502),
        ((401, ""), "auth_failed", False, 401),
        ((403, {"error": "forbidden"}), "auth_failed", False, 403),
        ((429, ""), "rate_limited", True, 429),
        ((404, "not found"), "upstream_error", False, 404),
        ((200, "<html>captive portal</html>"), "upstream_error", False, 200),
        ((200, {"Payload": {}}), "upstream_error", False, 200),
        (read_timeout, "timeout", True, None),
        (connect_timeout, "timeout", True, None),
        (refused, "upstream_unavailable", True, None),
        (dropped, "upstream_unavailable", True, None),
        (reset, "upstream_unavailable", True, None),
        (garbled, "upstream_unavailable", True, None),
        (truncated, "upstream_unavailable", True, None),
        (untrusted, "upstream_unavailable", False, None),
        (bad_scheme, "upstream_unavailable", False, None),
    ],
)
async def test_http_failures_map_to_spec_errors(
    step: Step, code: str, retryable: bool, status: int | None
) -> None:
    error, script = await _stat_error(step)
    assert (error.code, error.retryable, error.http_status) == (code, retryable, status)
    assert error.upstream_code is None
    assert script.calls == (FAST.attempts if retryable else 1)


@pytest.mark.parametrize(
    "first",
    [(503, "busy"), read_timeout, refused, ivh_err(100012), ivh_err(-101000)],
)
async def test_a_transient_failure_is_retried_once_then_succeeds(first: Step) -> None:
    script = Script(first, ivh_ok({**SESSION, "SessionStatus": 1}))
    stat = await ivh_client(script).stat_session("m123")
    assert stat.session_status == 1
    assert script.calls == 2


async def test_a_non_retryable_code_is_called_once() -> None:
    error, script = await _stat_error(ivh_err(100001), ivh_ok(SESSION))
    assert error.code == "invalid_payload"
    assert script.calls == 1


async def test_the_deadline_bounds_attempts() -> None:
    policy = RetryPolicy(attempts=10, initial_delay=0.01, deadline=0.0)
    error, script = await _stat_error((503, ""), retry=policy)
    assert error.code == "upstream_unavailable"
    assert script.calls == 1


async def test_create_session_sends_the_documented_envelope() -> None:
    script = Script(ivh_ok(SESSION))
    created = await ivh_client(script).create_session(
        virtualman_project_id="proj",
        user_id="kiosk-1",
        protocol="webrtc",
        driver_type=1,
        extra={"StreamMaxInterval": 3000, "ProtocolOption": {"TrtcAppId": 1}, "UserId": "x"},
    )
    assert (created.session_id, created.session_status, created.status_name) == (
        "m123",
        3,
        "preparing",
    )
    request = script.requests[0]
    assert request.url.path == PATH + "createsession"
    assert request.headers["content-type"] == "application/json;charset=utf-8"
    body = script.body()
    assert body["Header"] == {}
    assert re.fullmatch(r"[0-9a-f]{32}", body["Payload"].pop("ReqId"))
    assert body["Payload"] == {
        "VirtualmanProjectId": "proj",
        "UserId": "kiosk-1",  # the named argument wins over `extra`
        "Protocol": "webrtc",
        "DriverType": 1,
        "StreamMaxInterval": 3000,
        "ProtocolOption": {"TrtcAppId": 1},
    }


async def test_each_request_gets_a_fresh_req_id_retries_included() -> None:
    script = Script((503, ""), ivh_ok(), ivh_ok())
    client = ivh_client(script)
    await client.start_session("m123")
    await client.start_session("m123")
    req_ids = {script.body(n)["Payload"]["ReqId"] for n in range(3)}
    assert len(req_ids) == 3


async def test_every_request_is_signed_with_a_current_timestamp() -> None:
    script = Script((503, ""), ivh_ok())
    await ivh_client(script).close_session("m123")
    for request in script.requests:
        params = dict(request.url.query)
        assert list(params) == ["appkey", "timestamp", "signature"]
        assert params["appkey"] == APPKEY
        assert abs(int(params["timestamp"]) - time.time()) < 5
        signed = {"appkey": APPKEY, "timestamp": params["timestamp"]}
        assert params["signature"] == ivh_signature(signed, TOKEN)
        assert request.url.raw_query_string.endswith(
            f"signature={quote(params['signature'], safe='')}"
        )


async def test_stat_session_fills_in_the_session_id_and_tolerates_gaps() -> None:
    script = Script(ivh_ok({"SessionStatus": 1, "IsSessionStarted": True, "NewField": [1]}))
    stat = await ivh_client(script).stat_session("m123")
    assert (stat.session_id, stat.status_name, stat.is_session_started) == (
        "m123",
        "in_progress",
        True,
    )
    assert (stat.play_stream_addr, stat.speak_status, stat.error_code) == (None, None, None)
    assert script.body()["Payload"]["SessionId"] == "m123"


def _entry(**fields: Any) -> dict[str, Any]:
    return {"UserId": "abc", "SessionId": "m123", "SessionStatus": 1, **fields}


async def test_list_sessions_parses_the_documented_sample() -> None:
    sample = _entry(PlayStreamAddr="rtmp://live.qq.com/live/m789", DriverType=1)
    script = Script(ivh_ok({"Sessions": [{**sample, "IsSessionStarted": True}]}))
    [info] = await ivh_client(script).list_sessions()
    assert (info.user_id, info.session_id, info.driver_type, info.is_session_started) == (
        "abc",
        "m123",
        1,
        True,
    )
    assert script.requests[0].url.path == PATH + "listsessionofuin"


@pytest.mark.parametrize(("raw", "expected"), [(1, 1), ("3", 3), (" 1 ", 1), (None, None)])
async def test_driver_type_accepts_int_and_string(raw: object, expected: int | None) -> None:
    script = Script(ivh_ok({"Sessions": [_entry(DriverType=raw)]}))
    [info] = await ivh_client(script).list_sessions()
    assert info.driver_type == expected


@pytest.mark.parametrize(
    ("status", "name"),
    [(1, "in_progress"), (2, "closed"), (3, "preparing"), (4, "failed"), (5, "unknown")],
)
async def test_session_status_is_kept_and_named(status: int, name: str) -> None:
    script = Script(ivh_ok({"Sessions": [_entry(SessionStatus=status)]}))
    [info] = await ivh_client(script).list_sessions()
    assert (info.session_status, info.status_name) == (status, name)


async def test_list_sessions_accepts_an_empty_or_missing_list() -> None:
    assert await ivh_client(Script(ivh_ok({"Sessions": []}))).list_sessions() == []
    assert await ivh_client(Script(ivh_ok())).list_sessions() == []


async def test_list_project_sessions_sends_the_project() -> None:
    script = Script(ivh_ok({"Sessions": [_entry(VirtualmanProjectId="p1", CreateType=0)]}))
    [info] = await ivh_client(script).list_project_sessions("p1")
    assert (info.virtualman_project_id, info.create_type) == ("p1", 0)
    assert script.requests[0].url.path == PATH + "listsessionofprojectid"
    assert script.body()["Payload"]["VirtualmanProjectId"] == "p1"


@pytest.mark.parametrize(
    "payload", [{"Sessions": "nope"}, {"Sessions": [{"UserId": "no session id"}]}]
)
async def test_a_malformed_payload_is_an_upstream_error(payload: dict[str, Any]) -> None:
    script = Script(ivh_ok(payload))
    with pytest.raises(UpstreamError) as info:
        await ivh_client(script).list_sessions()
    assert (info.value.code, info.value.retryable) == ("upstream_error", False)
    assert script.calls == 1


async def test_create_session_without_a_session_id_is_an_upstream_error() -> None:
    with pytest.raises(UpstreamError, match="createsession"):
        await ivh_client(Script(ivh_ok({"SessionStatus": 1}))).create_session(
            virtualman_project_id="p", user_id="u", protocol="trtc", driver_type=3
        )


@pytest.mark.parametrize("gone", [110013, 110018])
@pytest.mark.parametrize("unsure", [read_timeout, reset, (502, "<html/>")])
async def test_close_after_an_unknown_outcome_treats_gone_as_success(
    gone: int, unsure: Step
) -> None:
    script = Script(unsure, ivh_err(gone))
    await ivh_client(script).close_session("m123")
    assert script.calls == 2


@pytest.mark.parametrize("rejected", [refused, (429, ""), ivh_err(100012)])
async def test_close_after_a_rejected_attempt_still_reports_closed(rejected: Step) -> None:
    script = Script(rejected, ivh_err(110013))
    with pytest.raises(UpstreamError) as info:
        await ivh_client(script).close_session("m123")
    assert info.value.code == "session_closed"
    assert script.calls == 2


async def test_close_of_a_closed_session_on_the_first_attempt_fails() -> None:
    with pytest.raises(UpstreamError) as info:
        await ivh_client(Script(ivh_err(110013))).close_session("m123")
    assert info.value.code == "session_closed"


async def test_the_observer_sees_every_logical_call() -> None:
    records = Records()
    script = Script((503, ""), ivh_ok(), ivh_err(110018))
    client = ivh_client(script, observer=records)
    await client.start_session("m1")
    with pytest.raises(UpstreamError):
        await client.start_session("m2")
    assert [(r.service, r.api, r.outcome, r.attempts, r.retries) for r in records] == [
        ("ivh", "startsession", "ok", 2, 1),
        ("ivh", "startsession", "session_not_found", 1, 0),
    ]
    assert all(r.elapsed >= 0 for r in records)


async def test_a_failing_observer_does_not_fail_the_call(caplog: pytest.LogCaptureFixture) -> None:
    def broken(record: object, /) -> None:
        raise RuntimeError("metrics down")

    await ivh_client(Script(ivh_ok()), observer=broken).start_session("m1")
    assert "call observer failed" in caplog.text
