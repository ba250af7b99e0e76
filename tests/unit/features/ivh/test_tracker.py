"""SessionTracker: diffing listings, events with seq, closing, retention (docs/topics.md,
docs/reliability.md)."""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.envelope import Emitter
from bridge.core.topics import Topics
from bridge.features.ivh.tracker import SessionState, SessionTracker
from bridge.tencent.models import SessionInfo


@dataclass
class Recorder:
    """A Publisher that keeps what was published, retained values by topic."""

    messages: list[tuple[str, Any]] = field(default_factory=list)
    retained: dict[str, bytes] = field(default_factory=dict)

    def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None) -> None:
        self.messages.append((topic, json.loads(payload)))

    def set_retained(self, topic: str, payload: bytes) -> None:
        self.retained[topic] = payload
        self.messages.append((topic, json.loads(payload)))

    def clear_retained(self, topic: str) -> None:
        self.retained.pop(topic, None)
        self.messages.append((topic, None))

    def events(self) -> list[dict[str, Any]]:
        return [body for topic, body in self.messages if topic.endswith("/event")]


def make(
    retention: float = 300.0, *, learning: bool = False
) -> tuple[SessionTracker, Recorder, list[Any]]:
    recorder, transitions = Recorder(), list[Any]()
    topics = Topics("t")
    tracker = SessionTracker(
        publisher=recorder,
        emitter=Emitter(recorder, topics),
        topics=topics,
        closed_retention=retention,
        on_transition=lambda before, after: transitions.append((before, after)),
        learning=learning,
    )
    return tracker, recorder, transitions


def info(sid: str, status: int, started: bool = False) -> SessionInfo:
    return SessionInfo.model_validate(
        {"SessionId": sid, "SessionStatus": status, "IsSessionStarted": started, "UserId": "u"}
    )


def test_an_unchanged_listing_publishes_nothing() -> None:
    tracker, recorder, _ = make()
    tracker.apply_list([info("a", 3), info("b", 1)])
    published = len(recorder.messages)
    tracker.apply_list([info("a", 3), info("b", 1)])
    assert len(recorder.messages) == published


def test_changes_publish_state_event_and_snapshot() -> None:
    tracker, recorder, transitions = make()
    tracker.apply_list([info("a", 3)])
    tracker.apply_list([info("a", 1, started=True)])
    state = json.loads(recorder.retained["t/ivh/a/state"])
    assert (state["status"], state["started"]) == ("in_progress", True)
    changes = [(e["before"], e["after"], e["seq"]) for e in recorder.events()]
    assert changes == [(None, "preparing", 1), ("preparing", "in_progress", 2), (False, True, 3)]
    assert [e["type"] for e in recorder.events()][-1] == "session_started"
    snapshot = json.loads(recorder.retained["t/ivh/sessions"])
    assert [s["session_id"] for s in snapshot["sessions"]] == ["a"]
    assert len(transitions) == 2


def test_started_going_true_is_an_event_not_only_a_new_state() -> None:
    tracker, recorder, _ = make()
    tracker.apply_list([info("a", 1)])
    tracker.apply(dataclasses.replace(_state("a", 1), started=True))  # ivh/start_session
    assert json.loads(recorder.retained["t/ivh/a/state"])["started"] is True
    last = recorder.events()[-1]
    assert (last["type"], last["before"], last["after"], last["seq"]) == (
        "session_started",
        False,
        True,
        2,
    )
    assert last["data"]["started"] is True
    tracker.apply_list([info("a", 1, started=True)])  # the listing catches up: no change
    assert len(recorder.events()) == 2


def test_a_session_that_leaves_the_list_is_closed_once() -> None:
    tracker, recorder, _ = make()
    tracker.apply_list([info("a", 1)])
    tracker.apply_list([])
    tracker.apply_list([])
    types = [e["type"] for e in recorder.events()]
    assert types == ["status_changed", "status_changed", "session_closed"]
    assert json.loads(recorder.retained["t/ivh/a/state"])["status_code"] == 2


def test_a_listing_asked_for_before_an_action_leaves_what_the_action_did() -> None:
    """The listing shows sessions as they were when it was asked for: a session created (or
    started) by an action meanwhile is neither closed nor set back by it; the next listing,
    asked for after the action, is the judge again."""
    tracker, recorder, _ = make()
    tracker.apply_list([info("old", 1)])
    asked_at = time.monotonic()
    tracker.apply(_state("new", 3))  # created meanwhile
    tracker.apply(dataclasses.replace(_state("old", 1), started=True))  # started meanwhile
    tracker.apply_list([info("old", 1, started=False)], asked_at=asked_at)
    assert json.loads(recorder.retained["t/ivh/new/state"])["status"] == "preparing"
    assert json.loads(recorder.retained["t/ivh/old/state"])["started"] is True
    tracker.apply_list([info("old", 1, started=True)], asked_at=time.monotonic())
    assert json.loads(recorder.retained["t/ivh/new/state"])["status"] == "closed"


def test_a_listing_asked_for_later_does_not_forget_an_action_for_one_asked_for_earlier() -> None:
    """Two listings on their way (a poll and `ivh/list_sessions`): the later one coming back
    first must not make the earlier one blind to an action between them."""
    tracker, recorder, _ = make()
    first = time.monotonic()
    tracker.apply(_state("new", 3))
    tracker.apply_list([info("new", 3)], asked_at=time.monotonic())  # the later one
    tracker.apply_list([], asked_at=first)  # the earlier one, without the session
    assert json.loads(recorder.retained["t/ivh/new/state"])["status"] == "preparing"


def _state(sid: str, status: int) -> SessionState:
    name = {1: "in_progress", 3: "preparing"}[status]
    return SessionState(sid, name, status, False, 1, "u", None, "now")


def test_a_closed_session_does_not_reopen_when_a_listing_lags() -> None:
    tracker, recorder, _ = make()
    tracker.apply_list([info("a", 1, started=True)])
    tracker.mark_closed("a")  # closed through the bridge
    tracker.apply_list([info("a", 1, started=True)])  # the cloud's list has not caught up
    assert json.loads(recorder.retained["t/ivh/a/state"])["status"] == "closed"
    assert [e["after"] for e in recorder.events() if e["type"] == "status_changed"] == [
        "in_progress",
        "closed",
    ]


def test_closed_sessions_are_cleared_after_retention() -> None:
    tracker, recorder, _ = make(retention=0.0)
    tracker.apply_list([info("a", 1)])
    tracker.apply(
        SessionState("a", "closed", 2, False, None, "u", None, "2026-01-01T00:00:00.000Z")
    )
    time.sleep(0.001)
    tracker.expire()
    assert "t/ivh/a/state" not in recorder.retained
    assert ("t/ivh/a/channel", None) in recorder.messages
    assert json.loads(recorder.retained["t/ivh/sessions"])["sessions"] == []
    assert tracker.get("a") is None


def test_unknown_status_codes_are_kept_and_named() -> None:
    tracker, recorder, _ = make()
    tracker.apply_list([info("a", 7)])
    state = json.loads(recorder.retained["t/ivh/a/state"])
    assert (state["status"], state["status_code"]) == ("unknown", 7)


def test_a_close_through_the_bridge_updates_the_snapshot_at_once() -> None:
    tracker, recorder, _ = make()
    tracker.apply_list([info("a", 1, started=True)])
    tracker.mark_closed("a")
    snapshot = json.loads(recorder.retained["t/ivh/sessions"])
    assert [s["status"] for s in snapshot["sessions"]] == ["closed"]


def test_a_session_id_that_cannot_name_a_topic_is_ignored(caplog: Any) -> None:
    tracker, recorder, transitions = make()
    tracker.apply_list([info("a/+/#", 1), info("ok", 1), info("a/+/#", 1)])
    tracker.apply_list([info("a/+/#", 1), info("ok", 1)])
    topics = {topic for topic, _ in recorder.messages}
    assert not any("+" in topic or "#" in topic for topic in topics)
    assert "t/ivh/ok/state" in topics and tracker.get("ok") is not None
    assert tracker.get("a/+/#") is None and [after.session_id for _, after in transitions] == ["ok"]
    assert sum("not a valid topic level" in r.message for r in caplog.records) == 1


def _retained(sid: str, status: int, **fields: Any) -> bytes:
    return json.dumps({**_state(sid, status).as_dict(), **fields}).encode()


def test_a_learned_stream_max_interval_is_kept_and_moves_the_session() -> None:
    """The creator's state carries it; a listing (which lacks it) or another instance's state
    without it keeps it; the owner hears of it even when nothing else changed."""
    tracker, recorder, transitions = make(learning=True)
    tracker.apply_list([info("a", 3)])  # polled here before the creator's state arrived
    tracker.learn("a", _retained("a", 3, driver_type=None, stream_max_interval=4000))
    assert tracker.get("a").stream_max_interval == 4000  # type: ignore[union-attr]
    assert transitions[-1][1].stream_max_interval == 4000
    tracker.apply_list([info("a", 1)])
    assert json.loads(recorder.retained["t/ivh/a/state"])["stream_max_interval"] == 4000
    tracker.learn("a", _retained("a", 3, user_id="v", stream_max_interval=None))
    assert tracker.get("a").stream_max_interval == 4000  # type: ignore[union-attr]


@pytest.mark.parametrize("odd", ["4000", 4000.5, True, 1999, 6001, [4000], {"ms": 1}])
def test_a_stream_max_interval_createsession_would_refuse_is_not_learned(odd: Any) -> None:
    tracker, _, transitions = make(learning=True)
    tracker.learn("a", _retained("a", 1, stream_max_interval=odd))
    assert tracker.get("a").stream_max_interval is None  # type: ignore[union-attr]
    assert transitions[-1][1].stream_max_interval is None


@given(
    st.builds(
        SessionState,
        session_id=st.text(max_size=20),
        status=st.text(max_size=10),
        status_code=st.none() | st.integers(),
        started=st.booleans(),
        driver_type=st.none() | st.integers(),
        user_id=st.none() | st.text(max_size=10),
        play_stream_addr=st.none() | st.text(max_size=30),
        updated_at=st.text(max_size=30),
        stream_max_interval=st.none() | st.integers(),
    )
)
def test_a_state_as_a_dict_is_what_dataclasses_asdict_gives(state: SessionState) -> None:
    assert state.as_dict() == dataclasses.asdict(state)
    assert list(state.as_dict()) == list(dataclasses.asdict(state))  # the same key order
