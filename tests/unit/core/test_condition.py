"""One log line per change of an upstream's condition, on a fake clock."""

from __future__ import annotations

import logging

import pytest

from bridge.core.condition import Condition
from tests.support.clock import FakeClock


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def cond(clock: FakeClock) -> Condition:
    return Condition(
        name="desk", logger=logging.getLogger("test.condition"), clock=clock, wall=lambda: "T"
    )


def lines(caplog: pytest.LogCaptureFixture) -> list[tuple[int, str]]:
    found = [(r.levelno, r.getMessage()) for r in caplog.records if r.name == "test.condition"]
    caplog.clear()
    return found


def test_unknown_until_the_first_call(cond: Condition) -> None:
    assert cond.status() == {"reachable": None, "last_error": None}
    assert cond.last_call is None


def test_a_failure_is_logged_once_with_its_reason_however_often_it_repeats(
    cond: Condition, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    for _ in range(50):
        clock.now += 0.2
        cond.failed("auth_failed", "UserSig verification failed (wrong key or SDKAppID)")
    assert lines(caplog) == [
        (
            logging.ERROR,
            "desk: UserSig verification failed (wrong key or SDKAppID) (auth_failed); "
            "check the credentials in the configuration",
        )
    ]
    assert cond.status() == {
        "reachable": False,
        "last_error": {
            "code": "auth_failed",
            "message": "UserSig verification failed (wrong key or SDKAppID)",
            "at": "T",
        },
    }


def test_a_new_reason_is_a_change_and_recovery_says_how_long(
    cond: Condition, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cond.ok()
    assert lines(caplog) == [(logging.INFO, "desk: reachable")]
    clock.now = 110.0
    cond.failed("timeout", "no answer within 5 s")
    clock.now = 111.0
    cond.failed("timeout", "no answer within 5 s")
    clock.now = 112.0
    cond.failed("upstream_unavailable", "HTTP 503")
    assert lines(caplog) == [
        (logging.WARNING, "desk: no answer within 5 s (timeout)"),
        (logging.WARNING, "desk: HTTP 503 (upstream_unavailable)"),
    ]
    clock.now = 122.5
    cond.ok()
    cond.ok()
    assert lines(caplog) == [
        (logging.INFO, "desk: recovered after 12.5 s (was upstream_unavailable)")
    ]
    assert cond.status() == {"reachable": True, "last_error": None}


def test_a_request_error_is_shown_but_says_nothing_of_the_service(
    cond: Condition, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    cond.ok()
    lines(caplog)
    cond.failed("session_not_found", "no such session", unreachable=False)
    assert lines(caplog) == []
    assert cond.reachable is True
    assert cond.last_error == {"code": "session_not_found", "message": "no such session", "at": "T"}


def test_a_message_that_is_its_own_reason_is_said_once(
    clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    channel = Condition(
        name="ivh channel s1",
        logger=logging.getLogger("test.condition"),
        clock=clock,
        up="connected",
    )
    channel.ok()
    channel.failed("refused: HTTP 409", "refused: HTTP 409")
    channel.failed("refused: HTTP 409", "refused: HTTP 409")
    clock.now += 3
    channel.ok()
    assert lines(caplog) == [
        (logging.INFO, "ivh channel s1: connected"),
        (logging.WARNING, "ivh channel s1: refused: HTTP 409"),
        (logging.INFO, "ivh channel s1: recovered after 3.0 s (was refused: HTTP 409)"),
    ]
