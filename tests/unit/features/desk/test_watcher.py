"""DeskWatcher: polls spread over the interval, capped by a token bucket (docs/reliability.md, issue
6)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from bridge.features.desk.watcher import DeskWatcher, TokenBucket


@asynccontextmanager
async def watching(
    sessions: int, *, interval: float, rate: float
) -> AsyncIterator[tuple[DeskWatcher, list[tuple[float, str]]]]:
    polls: list[tuple[float, str]] = []

    async def poll(sid: str) -> None:
        polls.append((time.monotonic(), sid))

    watcher = DeskWatcher(poll=poll, default_interval=interval, rate=rate)
    for i in range(sessions):
        watcher.watch(f"s{i}")
    task = asyncio.create_task(watcher.run())
    try:
        yield watcher, polls
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        await watcher.aclose()


def within(polls: list[tuple[float, str]], start: float, seconds: float) -> int:
    return sum(1 for at, _ in polls if at - start < seconds)


async def test_a_thousand_sessions_are_spread_over_the_interval() -> None:
    start = time.monotonic()
    async with watching(1000, interval=1.0, rate=10_000) as (_, polls):
        await asyncio.sleep(0.5)
    first_half = within(polls, start, 0.5)
    assert 300 < first_half < 700  # uniform first polls: about half, not all at once
    assert within(polls, start, 0.05) < 150


async def test_the_request_rate_caps_polls() -> None:
    start = time.monotonic()
    async with watching(1000, interval=0.1, rate=200) as (_, polls):
        await asyncio.sleep(0.5)
    # a full bucket (200) plus 200/s for 0.5 s; every session was due several times over
    assert len(polls) <= 200 + 100 + 5
    assert within(polls, start, 0.5) >= 200


async def test_unwatch_stops_and_rewatch_retimes() -> None:
    async with watching(1, interval=0.05, rate=1000) as (watcher, polls):
        await asyncio.sleep(0.2)
        assert watcher.unwatch("s0") and not watcher.unwatch("s0")
        count = len(polls)
        await asyncio.sleep(0.15)
        assert len(polls) == count
        assert watcher.watch("s0", 0.02) == 0.02 and watcher.interval("s0") == 0.02
        await asyncio.sleep(0.15)
        assert len(polls) > count + 3


async def test_token_bucket_waits_for_tokens() -> None:
    bucket = TokenBucket(50)
    start = time.monotonic()
    for _ in range(60):  # 50 saved up, then 10 more at 50/s
        await bucket.take()
    elapsed = time.monotonic() - start
    assert 0.15 < elapsed < 0.6
