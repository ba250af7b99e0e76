"""StateOrder: callbacks against callbacks and against state queries (docs/desk.md "State from
events"), on fake clocks."""

from __future__ import annotations

from typing import Any

from bridge.features.desk.callbacks import Notification
from bridge.features.desk.order import SKEW_MS, StateOrder
from tests.support.clock import FakeClock

WALL_MS = 1_800_000_000_000


def note(event_type: str, event_time: int | None, sid: str = "s") -> Notification:
    implied: dict[str, Any] = {"transfer_started": "queuing", "transfer_failed": "chatbot"}
    return Notification(
        session_id=sid,
        event_type=event_type,
        data={},
        state=implied.get(event_type),
        event_time=event_time,
    )


def make() -> tuple[StateOrder, FakeClock, FakeClock]:
    clock, wall = FakeClock(), FakeClock(WALL_MS / 1000)
    return StateOrder(clock=clock, wall=wall), clock, wall


def test_an_older_notification_is_out_of_order_and_one_millisecond_goes_by_stage() -> None:
    order, _, _ = make()
    assert order.notified(note("transfer_failed", 2000))
    assert not order.notified(note("transfer_started", 1999))
    assert not order.notified(note("transfer_started", 2000))  # started comes before failed
    assert order.notified(note("transfer_started", 2001))
    assert order.notified(note("user_timeout", None))  # no time: not ordered
    assert order.notified(note("transfer_started", 5, sid="other"))


def test_a_notification_is_trusted_until_a_query_found_a_state() -> None:
    order, _, _ = make()
    assert order.trusted(note("transfer_started", WALL_MS - 60_000))
    assert order.answered("s", order.sent())  # a query sent at WALL_MS
    assert not order.trusted(note("transfer_started", WALL_MS - 1))  # older than the query
    assert not order.trusted(note("transfer_started", WALL_MS + SKEW_MS))  # too close to say
    assert order.trusted(note("transfer_started", WALL_MS + SKEW_MS + 1))
    assert not order.trusted(note("transfer_started", None))
    assert order.trusted(note("transfer_started", WALL_MS - 1, sid="other"))


def test_an_answer_to_a_query_sent_before_a_move_is_not_applied() -> None:
    order, clock, _ = make()
    early = order.sent()
    clock.now += 0.5
    order.moved("s")  # a notification's state, applied while the query was out
    assert not order.answered("s", early)
    clock.now += 0.1
    assert order.answered("s", order.sent())


def test_of_two_queries_out_at_once_the_later_sent_wins() -> None:
    order, clock, _ = make()
    first = order.sent()
    clock.now += 0.2
    second = order.sent()
    assert order.answered("s", second)
    assert not order.answered("s", first)  # answered last, asked first


def test_forget_leaves_nothing_behind() -> None:
    order, clock, _ = make()
    assert order.notified(note("transfer_failed", 2000))
    assert order.answered("s", order.sent())
    clock.now += 1
    order.moved("s")
    order.forget("s")
    assert order.notified(note("transfer_started", 1))
    assert order.trusted(note("transfer_started", 1))
    assert order.answered("s", order.sent())
