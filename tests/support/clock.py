"""A fake clock for pure logic: a callable that returns `now`, which the test moves."""

from __future__ import annotations


class FakeClock:
    """A settable monotonic clock."""

    def __init__(self, now: float = 100.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now
