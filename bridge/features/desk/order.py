"""Which Desk state is the newest, when callbacks and state queries both move it (docs/desk.md
"State from events"). No I/O.

Three sources move a session's state: notifications (with Tencent's `EventTime`), polls and
state queries (which answer for some moment between their request and their answer). Each can
arrive late: a delivery Tencent retries, an answer that was slow. The rules:

- a notification older than one already applied moves nothing (of one millisecond, they go in
  the order a session goes through them, `STAGE`);
- a notification not clearly newer than the last state a query found (within `SKEW`, for the two
  clocks) is confirmed by a query instead of trusted: its implied state may be the past;
- a query's answer is applied only if nothing moved the state since the query was sent.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from bridge.features.desk.callbacks import STAGE, Notification

SKEW_MS = 1000  # Tencent's clock against ours: an EventTime this close to a query is not newer


@dataclass(frozen=True, slots=True)
class Sent:
    """When a state query was sent: on the monotonic clock, and as wall-clock ms."""

    at: float
    wall_ms: int


class StateOrder:
    """Per session: the last notification applied, the last query applied, the last move."""

    def __init__(
        self,
        *,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self._clock = clock
        self._wall = wall
        self._events: dict[str, tuple[int, int]] = {}  # (EventTime, stage) last applied
        self._queried: dict[str, int] = {}  # wall ms the applied answer's query was sent
        self._moved: dict[str, float] = {}  # monotonic time of the last move

    def sent(self) -> Sent:
        """A state query goes out now."""
        return Sent(self._clock(), int(self._wall() * 1000))

    def notified(self, note: Notification) -> bool:
        """Whether a state-moving notification is not older than the last one applied; if so it
        is the last one now."""
        if note.event_time is None:
            return True
        key = (note.event_time, STAGE.get(note.event_type, 0))
        last = self._events.get(note.session_id)
        if last is not None and key < last:
            return False
        self._events[note.session_id] = key
        return True

    def trusted(self, note: Notification) -> bool:
        """Whether the state a notification implies may be applied as it is: no query has found
        a state yet, or the notification is clearly newer than that query."""
        queried = self._queried.get(note.session_id)
        if queried is None:
            return True
        return note.event_time is not None and note.event_time > queried + SKEW_MS

    def moved(self, sid: str) -> None:
        """A notification's state was applied now."""
        self._moved[sid] = self._clock()

    def answered(self, sid: str, sent: Sent) -> bool:
        """Whether the answer to a query sent at `sent` may be applied: nothing moved the state
        since. If so it is the last query applied."""
        if sent.at < self._moved.get(sid, float("-inf")):
            return False
        self._moved[sid] = sent.at
        self._queried[sid] = sent.wall_ms
        return True

    def forget(self, sid: str) -> None:
        """The session is gone for good."""
        self._events.pop(sid, None)
        self._queried.pop(sid, None)
        self._moved.pop(sid, None)
