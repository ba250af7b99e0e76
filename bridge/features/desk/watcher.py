"""Polling watched Desk sessions (docs/reliability.md): spread over the interval, under a request
rate.

Each watched session has its own interval; its first poll is placed at a random point of the
interval so that many sessions watched at once do not poll together, and every call takes a
token from a bucket refilled at `rate` per second (burst 1 s worth), so 1,000 watched sessions
never burst upstream.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import itertools
import random
import time
from collections.abc import Awaitable, Callable

Poll = Callable[[str], Awaitable[None]]


class TokenBucket:
    """`rate` tokens per second, at most `rate` (and at least 1) saved up."""

    def __init__(self, rate: float) -> None:
        self._rate = rate
        self._capacity = max(1.0, rate)
        self._tokens = self._capacity
        self._stamp = time.monotonic()

    async def take(self) -> None:
        """Wait for one token."""
        while True:
            now = time.monotonic()
            self._tokens = min(self._capacity, self._tokens + (now - self._stamp) * self._rate)
            self._stamp = now
            if self._tokens >= 1:
                self._tokens -= 1
                return
            await asyncio.sleep((1 - self._tokens) / self._rate)


class DeskWatcher:
    """Schedules state polls of watched sessions."""

    def __init__(self, *, poll: Poll, default_interval: float, rate: float) -> None:
        self._poll = poll
        self._default = default_interval
        self._bucket = TokenBucket(rate)
        self._intervals: dict[str, float] = {}
        self._generation: dict[str, int] = {}
        self._heap: list[tuple[float, int, str, int]] = []
        self._counter = itertools.count()
        self._wake = asyncio.Event()
        self._inflight: set[asyncio.Task[None]] = set()
        self.polls = 0

    @property
    def watched(self) -> list[str]:
        """Watched session ids."""
        return list(self._intervals)

    def interval(self, session_id: str) -> float | None:
        """The poll interval of a watched session."""
        return self._intervals.get(session_id)

    def watch(self, session_id: str, interval: float | None = None) -> float:
        """Start (or re-time) watching; the first poll lands at a random point of the interval."""
        every = interval or self._default
        self._intervals[session_id] = every
        gen = self._generation.get(session_id, 0) + 1
        self._generation[session_id] = gen
        self._push(time.monotonic() + random.uniform(0, every), session_id, gen)
        return every

    def unwatch(self, session_id: str) -> bool:
        """Stop watching; whether it was watched."""
        self._generation[session_id] = self._generation.get(session_id, 0) + 1
        return self._intervals.pop(session_id, None) is not None

    def _push(self, due: float, session_id: str, gen: int) -> None:
        heapq.heappush(self._heap, (due, next(self._counter), session_id, gen))
        self._wake.set()

    async def run(self) -> None:
        """Poll each watched session when it is due, forever."""
        while True:
            due = self._next_due()
            if due is None:
                self._wake.clear()
                await self._wake.wait()
                continue
            if due > time.monotonic():
                self._wake.clear()
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), due - time.monotonic())
                continue
            await self._fire()

    def _next_due(self) -> float | None:
        while self._heap:
            due, _, sid, gen = self._heap[0]
            if self._generation.get(sid) == gen and sid in self._intervals:
                return due
            heapq.heappop(self._heap)  # stale: unwatched or re-timed
        return None

    async def _fire(self) -> None:
        due, _, sid, gen = heapq.heappop(self._heap)
        await self._bucket.take()
        if self._generation.get(sid) != gen:
            return
        self._push(max(due + self._intervals[sid], time.monotonic()), sid, gen)
        task = asyncio.create_task(self._poll_one(sid), name=f"desk-poll:{sid}")
        self._inflight.add(task)
        task.add_done_callback(self._inflight.discard)

    async def _poll_one(self, sid: str) -> None:
        self.polls += 1
        await self._poll(sid)

    async def aclose(self) -> None:
        """Cancel polls in flight."""
        for task in list(self._inflight):
            task.cancel()
        await asyncio.gather(*self._inflight, return_exceptions=True)
