"""Ended Desk sessions are let go after their retention, oldest first (fake clock)."""

from __future__ import annotations

from bridge.features.desk.ended import EndedSessions
from tests.support.clock import FakeClock


def test_a_session_is_due_once_its_retention_has_passed() -> None:
    clock = FakeClock()
    ended = EndedSessions(300, clock=clock)
    ended.mark("a")
    clock.now += 299.9
    assert ended.due() == []
    clock.now += 0.1
    assert ended.due() == ["a"]
    assert ended.due() == ["a"]  # still marked: only a discard lets it go
    ended.discard("a")
    assert ended.due() == [] and "a" not in ended and len(ended) == 0


def test_due_sessions_come_oldest_first_and_the_young_wait() -> None:
    clock = FakeClock()
    ended = EndedSessions(10, clock=clock)
    for sid in ("a", "b", "c"):
        ended.mark(sid)
        clock.now += 4
    # a ended 12 s ago, b 8 s, c 4 s
    assert ended.due() == ["a"]
    clock.now += 2
    assert ended.due() == ["a", "b"]


def test_marking_again_keeps_the_first_end() -> None:
    clock = FakeClock()
    ended = EndedSessions(10, clock=clock)
    ended.mark("a")
    clock.now += 8
    ended.mark("a")  # a second 141005, or the echo of its own retained state
    clock.now += 2
    assert ended.due() == ["a"]


def test_a_retention_of_zero_lets_a_session_go_at_once() -> None:
    ended = EndedSessions(0, clock=FakeClock())
    ended.mark("a")
    assert ended.due() == ["a"] and "a" in ended
