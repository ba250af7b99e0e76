"""Capped exponential backoff with jitter, bounded by attempts and a deadline.

Jitter is *equal* jitter by default: each delay is half the capped exponential step plus a random
half. Full jitter spreads clients best, but can retry almost at once; the retryable Tencent
codes are mostly "too frequent" (100012, 60007, 60011, 60018, 60019), where an immediate retry
is wasted, so equal jitter keeps a guaranteed minimum wait while still de-synchronising clients.
"""

from __future__ import annotations

import asyncio
import logging
import random
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Literal, TypeVar

logger = logging.getLogger(__name__)

T = TypeVar("T")


@dataclass(frozen=True, slots=True, kw_only=True)
class RetryPolicy:
    """How often and how long a retryable call is tried again."""

    attempts: int = 4
    initial_delay: float = 0.2
    max_delay: float = 5.0
    multiplier: float = 2.0
    deadline: float = 30.0
    jitter: Literal["equal", "full", "none"] = "equal"

    def __post_init__(self) -> None:
        if self.attempts < 1 or self.initial_delay < 0 or self.max_delay < 0 or self.deadline < 0:
            raise ValueError("attempts must be >= 1 and delays and deadline non-negative")

    def delays(self, rng: random.Random | None = None) -> Iterator[float]:
        """The waits before attempts 2..attempts, capped at `max_delay` and jittered."""
        uniform = (rng or random).uniform
        for n in range(self.attempts - 1):
            step = min(self.max_delay, self.initial_delay * self.multiplier**n)
            if self.jitter == "equal":
                yield step / 2 + uniform(0, step / 2)
            elif self.jitter == "full":
                yield uniform(0, step)
            else:
                yield step


DEFAULT_RETRY = RetryPolicy()
NO_RETRY = RetryPolicy(attempts=1)

OnRetry = Callable[[int, Exception, float], None]


@dataclass(kw_only=True)
class _Budget:
    policy: RetryPolicy
    delays: Iterator[float]
    started: float
    clock: Callable[[], float]

    def next_delay(self, min_delay: float) -> float | None:
        """The wait before the next attempt, or None when attempts or the deadline run out."""
        delay = next(self.delays, None)
        if delay is None:
            return None
        delay = max(delay, min_delay)
        elapsed = self.clock() - self.started
        return delay if elapsed + delay <= self.policy.deadline else None


async def call_with_retry(
    fn: Callable[[], Awaitable[T]],
    *,
    policy: RetryPolicy,
    is_retryable: Callable[[Exception], bool],
    on_retry: OnRetry | None = None,
    min_delay: Callable[[Exception], float] | None = None,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    rng: random.Random | None = None,
) -> T:
    """Await `fn()`, retrying retryable exceptions with backoff; re-raise the last one.

    No attempt starts after `policy.deadline` seconds (it bounds the waits, not a request in
    flight: the HTTP client's own timeout bounds that). `min_delay(exc)` raises a wait, e.g.
    to 60 s for Desk 70050, and so makes the retry fit the deadline or not happen.
    """
    budget = _Budget(policy=policy, delays=policy.delays(rng), started=clock(), clock=clock)
    attempt = 1
    while True:
        try:
            return await fn()
        except Exception as exc:
            if not is_retryable(exc):
                raise
            delay = budget.next_delay(min_delay(exc) if min_delay else 0.0)
            if delay is None:
                raise
            if on_retry is not None:
                on_retry(attempt, exc, delay)
            await sleep(delay)
            attempt += 1
