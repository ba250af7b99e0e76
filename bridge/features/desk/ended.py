"""Ended Desk sessions, kept for `desk.ended_retention` seconds and then let go (docs/desk.md
"Ended sessions"): without an end to it, a bridge that runs for months would remember, and keep
retained on the broker, every session it ever saw."""

from __future__ import annotations

import time
from collections.abc import Callable


class EndedSessions:
    """When each ended session ended, oldest first, on a monotonic clock."""

    def __init__(self, retention: float, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._retention = retention
        self._clock = clock
        self._at: dict[str, float] = {}  # insertion order is end order: the oldest come first

    def __len__(self) -> int:
        return len(self._at)

    def __contains__(self, sid: object) -> bool:
        return sid in self._at

    def mark(self, sid: str) -> None:
        """`sid` ended now; a session already marked keeps the time it first ended."""
        self._at.setdefault(sid, self._clock())

    def discard(self, sid: str) -> None:
        """`sid` is no longer ended (forgotten, or seen again in a live state)."""
        self._at.pop(sid, None)

    def due(self) -> list[str]:
        """The sessions ended `retention` seconds ago or longer, oldest first; each stays
        marked until discarded (in a cluster only the owner lets one go, docs/scale-out.md)."""
        limit = self._clock() - self._retention
        due: list[str] = []
        for sid, at in self._at.items():
            if at > limit:
                break
            due.append(sid)
        return due
