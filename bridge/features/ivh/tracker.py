"""What the bridge knows about IVH sessions, and the retained topics and events it keeps current.

A poll of `listsessionofuin` is diffed against the last one by a small signature per session, so
a poll where nothing changed publishes nothing (docs/reliability.md). A session that leaves the list
is
closed. Closed sessions keep their retained `closed` state for `closed_retention` seconds, then
their retained topics are cleared and they leave the `sessions` snapshot (docs/topics.md).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, fields, replace
from typing import Any

from bridge.core import jsontext
from bridge.core.envelope import Emitter, Publisher, dumps, now_iso
from bridge.core.topics import Topics
from bridge.ids import valid_session_id
from bridge.tencent.models import SessionInfo, status_name

log = logging.getLogger(__name__)

TERMINAL = frozenset({2, 4})  # closed, failed (docs/protocol.md A.3)
SNAPSHOT_DELAY = 0.1  # seconds an action's change waits for others to share a snapshot...
SNAPSHOT_DELAY_MAX = 1.0  # ...growing with the snapshot's size
ACTED_MEMORY = 600.0  # seconds an action's mark is kept: longer than any listing takes to come
Signature = tuple[Any, ...]
STREAM_MAX_INTERVALS = range(2000, 6001)  # ms, what `createsession` takes (docs/protocol.md A.3)


@dataclass(frozen=True, slots=True)
class SessionState:
    """The retained `<base>/ivh/<sid>/state` payload (docs/topics.md)."""

    session_id: str
    status: str
    status_code: int | None
    started: bool
    driver_type: int | None
    user_id: str | None
    play_stream_addr: str | None
    updated_at: str
    # ms, as given to `ivh/create_session`; None: not given, or not known here (the cloud's
    # default then). Retained so that whichever instance owns the session paces by it.
    stream_max_interval: int | None = None

    def as_dict(self) -> dict[str, Any]:
        """The payload as a dict. Every field is a str, int, bool or None, so this is what
        `dataclasses.asdict` gives, without its deep copy of each value (a tenth of the
        bridge's CPU for an `ivh/get_session`)."""
        return {name: getattr(self, name) for name in _FIELDS}

    @property
    def terminal(self) -> bool:
        """Closed or failed: no channel, no more drives."""
        return self.status_code in TERMINAL

    @property
    def drivable(self) -> bool:
        """In progress and started: the command channel may open (docs/protocol.md A.3, A.4)."""
        return self.status_code == 1 and self.started

    def signature(self) -> Signature:
        """Everything but `updated_at`."""
        return (
            self.status_code,
            self.started,
            self.driver_type,
            self.user_id,
            self.play_stream_addr,
        )


_FIELDS = tuple(f.name for f in fields(SessionState))


def info_signature(info: SessionInfo) -> Signature:
    """The signature of a listed session, without building its state."""
    return (
        info.session_status,
        info.is_session_started,
        info.driver_type,
        info.user_id,
        info.play_stream_addr,
    )


def state_of(info: SessionInfo, *, known: SessionState | None = None) -> SessionState:
    """A listed session as a state; fields the list lacks are kept from what was known."""
    return SessionState(
        session_id=info.session_id,
        status=status_name(info.session_status),
        status_code=info.session_status,
        started=info.is_session_started,
        driver_type=info.driver_type if info.driver_type is not None else _k(known, "driver_type"),
        user_id=info.user_id if info.user_id is not None else _k(known, "user_id"),
        play_stream_addr=info.play_stream_addr or _k(known, "play_stream_addr"),
        updated_at=now_iso(),
        stream_max_interval=_k(known, "stream_max_interval"),
    )


def _k(known: SessionState | None, name: str) -> Any:
    return getattr(known, name) if known is not None else None


Transition = Callable[[SessionState | None, SessionState], None]


class SessionTracker:
    """Live and recently closed sessions, their retained topics and their events."""

    def __init__(
        self,
        *,
        publisher: Publisher,
        emitter: Emitter,
        topics: Topics,
        closed_retention: float,
        on_transition: Transition,
        learning: bool = False,
        snapshot_owner: Callable[[], bool] | None = None,
        event_owner: Callable[[str], bool] | None = None,
    ) -> None:
        self._publisher = publisher
        self._emitter = emitter
        self._topics = topics
        self._retention = closed_retention
        self._on_transition = on_transition
        self._states: dict[str, SessionState] = {}
        self._signatures: dict[str, Signature] = {}
        self._bodies: dict[str, bytes] = {}  # the retained state of each session, serialised
        self._closed_at: dict[str, float] = {}
        self._snapshot_dirty = False
        self._flush_handle: asyncio.TimerHandle | None = None
        self._refused: set[str] = set()  # session ids not fit for a topic, each logged once
        self._acted: dict[str, float] = {}  # sessions an action updated, and when (monotonic)
        # In a cluster (docs/scale-out.md) the tracker also learns the states other instances
        # publish; the bodies it published itself are remembered a while, so that the echo of
        # an older one never overwrites a newer state.
        self._learning = learning
        self._mine: dict[str, deque[bytes]] = {}
        self._snapshot_owner = snapshot_owner
        # In a cluster a session's events come from its owner alone, whoever saw the change
        # (the poll owner, the instance that created it): one `seq` per session.
        self._event_owner = event_owner

    def get(self, session_id: str) -> SessionState | None:
        """The last known state of a session."""
        return self._states.get(session_id)

    @property
    def live_count(self) -> int:
        """Sessions not closed or failed."""
        return sum(1 for s in self._states.values() if not s.terminal)

    # -- inputs ---------------------------------------------------------------------------------
    def apply_list(self, infos: Iterable[SessionInfo], *, asked_at: float | None = None) -> None:
        """A full listing: diff, publish what changed, close what is gone.

        `asked_at` (monotonic) is when the listing was asked for: it shows the sessions as they
        were then, so one an action changed since (created, started, closed meanwhile) is left
        as the action made it, for the next listing to judge. Missing from this one, a session
        created meanwhile would be published closed, and a closed session never reopens.
        """
        newer = self._acted_since(asked_at)
        listed = set()
        for info in infos:
            sid = info.session_id
            listed.add(sid)
            if sid not in newer and self._signatures.get(sid) != info_signature(info):
                self._apply(state_of(info, known=self._states.get(sid)))
        for sid, state in list(self._states.items()):
            if sid not in listed and sid not in newer and not state.terminal:
                self._close(sid)  # left the list: closed (docs/reliability.md)
        self.flush()

    def _acted_since(self, asked_at: float | None) -> set[str]:
        """Sessions an action changed after `asked_at`. Marks older than any listing still on
        its way are dropped (two listings may be: a poll and `ivh/list_sessions`)."""
        if asked_at is None:
            return set()
        oldest = asked_at - ACTED_MEMORY
        self._acted = {sid: at for sid, at in self._acted.items() if at > oldest}
        return {sid for sid, at in self._acted.items() if at > asked_at}

    def apply(self, state: SessionState) -> None:
        """One session's new state (from an action); publishes it, and the snapshot soon."""
        self._acted[state.session_id] = time.monotonic()
        self._apply(state)
        self._flush_soon()

    def _apply(self, state: SessionState) -> None:
        if not valid_session_id(state.session_id):
            self._refuse(state.session_id)
            return
        before = self._states.get(state.session_id)
        if before is not None and before.signature() == state.signature():
            return
        if before is not None and before.terminal and not state.terminal:
            return  # a closed session never reopens: a listing that lags behind a close
        body = dumps(state.as_dict())
        self._states[state.session_id] = state
        self._signatures[state.session_id] = state.signature()
        self._bodies[state.session_id] = body
        if self._learning:
            self._mine.setdefault(state.session_id, deque(maxlen=8)).append(body)
        self._publisher.set_retained(self._topics.ivh_state(state.session_id), body)
        self._snapshot_dirty = True
        self._events(before, state)
        self._on_transition(before, state)

    def republish(self, session_id: str) -> None:
        """Publish the retained state again though it did not change (`ivh/<sid>/get`, SPEC
        2.2): an operator who cleared the topic gets it back."""
        body = self._bodies.get(session_id)
        if body is not None:
            self._publisher.set_retained(self._topics.ivh_state(session_id), body)

    def _refuse(self, session_id: str) -> None:
        """A session id from upstream that cannot name a topic (`/`, `+`, `#`, ...): ignored."""
        if session_id in self._refused:
            return
        if len(self._refused) >= 1000:
            self._refused.clear()
        self._refused.add(session_id)
        log.warning("ivh: ignoring session id %r: not a valid topic level", session_id[:140])

    def mark_closed(self, session_id: str) -> None:
        """The session is closed (closed through the bridge, or 110013): publish it now."""
        self._acted[session_id] = time.monotonic()
        self._close(session_id)
        self._flush_soon()

    def _flush_soon(self) -> None:
        """Publish the snapshot shortly: actions on many sessions share one (it can be large)."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self.flush()
            return
        if self._flush_handle is None:
            delay = min(SNAPSHOT_DELAY_MAX, SNAPSHOT_DELAY + len(self._bodies) / 10_000)
            self._flush_handle = loop.call_later(delay, self.flush)

    def _close(self, session_id: str) -> None:
        known = self._states.get(session_id)
        if known is not None and known.status_code == 2:
            return
        base = known or SessionState(session_id, "closed", 2, False, None, None, None, "")
        self._apply(replace(base, status="closed", status_code=2, updated_at=now_iso()))

    def _events(self, before: SessionState | None, after: SessionState) -> None:
        if self._event_owner is None or self._event_owner(after.session_id):
            self._emit_changes(before, after)
        if after.terminal:
            self._closed_at.setdefault(after.session_id, time.monotonic())
        else:
            self._closed_at.pop(after.session_id, None)

    def _emit_changes(self, before: SessionState | None, after: SessionState) -> None:
        was = before.status if before else None
        if was != after.status:
            self._emitter.emit(
                "ivh",
                after.session_id,
                "status_changed",
                after.as_dict(),
                before=was,
                after=after.status,
            )
        if after.started and not (before.started if before else False) and not after.terminal:
            # Armed for driving (startsession, or seen started in a listing): the retained state
            # changed, so an event says so, as for any change (docs/reliability.md).
            self._emitter.emit(
                "ivh",
                after.session_id,
                "session_started",
                after.as_dict(),
                before=False,
                after=True,
            )
        if after.terminal and after.status_code == 2 and was != "closed":
            self._emitter.emit("ivh", after.session_id, "session_closed", after.as_dict())

    def learn(self, session_id: str, payload: bytes) -> None:
        """A retained state another instance published (cluster): known now, not re-published;
        the transition still runs (the session's owner opens or closes its channel)."""
        if not self._learning or payload in self._mine.get(session_id, ()):
            return
        if not payload:
            self._forget(session_id)
            return
        state = _parse_state(session_id, payload)
        before = self._states.get(session_id)
        if state is None:
            return
        if before is not None:
            if state.stream_max_interval is None:  # an instance that did not create it
                state = replace(state, stream_max_interval=before.stream_max_interval)
            same = before.signature() == state.signature()
            if same and before.stream_max_interval == state.stream_max_interval:
                return
            if before.terminal and not state.terminal:
                return
        self._states[session_id] = state
        self._signatures[session_id] = state.signature()
        self._bodies[session_id] = payload
        self._snapshot_dirty = True
        self._events(before, state)  # the owner's, when another instance saw the change
        self._on_transition(before, state)
        self._flush_soon()

    def live_ids(self) -> list[str]:
        """Session ids not closed or failed."""
        return [sid for sid, s in self._states.items() if not s.terminal]

    def republish_all(self) -> None:
        """Publish every known state and the snapshot again (a new poll owner: the broker may
        have lost them, e.g. restarted without persistence)."""
        for sid, body in self._bodies.items():
            self._publisher.set_retained(self._topics.ivh_state(sid), body)
        self._snapshot_dirty = True
        self.flush()

    # -- outputs --------------------------------------------------------------------------------
    def expire(self, *, publish: bool = True) -> None:
        """Clear the retained topics of sessions closed longer than `closed_retention`
        (`publish=False`: only forget them; another instance clears them)."""
        limit = time.monotonic() - self._retention
        for sid in [s for s, at in self._closed_at.items() if at <= limit]:
            self._forget(sid)
            if publish:
                self._publisher.clear_retained(self._topics.ivh_state(sid))
                self._publisher.clear_retained(self._topics.ivh_channel(sid))
        self.flush()

    def _forget(self, sid: str) -> None:
        self._closed_at.pop(sid, None)
        self._acted.pop(sid, None)
        self._states.pop(sid, None)
        self._signatures.pop(sid, None)
        self._bodies.pop(sid, None)
        self._mine.pop(sid, None)
        self._emitter.forget("ivh", sid)
        self._snapshot_dirty = True

    def flush(self) -> None:
        """Publish the retained `sessions` snapshot if anything in it changed."""
        if self._flush_handle is not None:
            self._flush_handle.cancel()
            self._flush_handle = None
        if not self._snapshot_dirty:
            return
        if self._snapshot_owner is not None and not self._snapshot_owner():
            return  # the poll owner publishes the snapshot (docs/scale-out.md)
        self._snapshot_dirty = False
        # Joined from each session's serialised state: a snapshot of 10,000 costs a join.
        sessions = b",".join(self._bodies.values())
        updated = dumps({"updated_at": now_iso()})[1:]
        self._publisher.set_retained(
            self._topics.ivh_sessions, b'{"sessions":[%s],%s' % (sessions, updated)
        )


def _parse_state(session_id: str, payload: bytes) -> SessionState | None:
    """A retained state as published by an instance; None when it is not one."""
    doc = jsontext.object_of(payload)
    if doc is None or doc.get("session_id") != session_id:
        return None
    fields_of: dict[str, Any] = {name: doc.get(name) for name in _FIELDS}
    interval = fields_of["stream_max_interval"]
    if type(interval) is not int or interval not in STREAM_MAX_INTERVALS:
        fields_of["stream_max_interval"] = None  # not one `createsession` takes
    return SessionState(**fields_of)
