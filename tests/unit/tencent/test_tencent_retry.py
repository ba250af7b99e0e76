"""RetryPolicy and call_with_retry: backoff shape, attempts, deadline, minimum delays."""

from __future__ import annotations

import random

import pytest

from bridge.tencent.retry import RetryPolicy, call_with_retry


class Transient(Exception):
    """A retryable failure."""


class Fatal(Exception):
    """A failure that must not be retried."""


class FakeTime:
    """A monotonic clock that `sleep` advances; records the sleeps."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, delay: float) -> None:
        self.sleeps.append(delay)
        self.now += delay


class Flaky:
    """Fails with the given exceptions, then returns "ok"."""

    def __init__(self, *failures: Exception) -> None:
        self.failures = list(failures)
        self.calls = 0

    async def __call__(self) -> str:
        self.calls += 1
        if self.failures:
            raise self.failures.pop(0)
        return "ok"


def _retryable(exc: Exception) -> bool:
    return isinstance(exc, Transient)


async def _run(fn: Flaky, policy: RetryPolicy, fake: FakeTime, **kwargs: object) -> str:
    return await call_with_retry(
        fn,
        policy=policy,
        is_retryable=_retryable,
        clock=fake.clock,
        sleep=fake.sleep,
        **kwargs,  # type: ignore[arg-type]
    )


def test_delays_grow_exponentially_and_are_capped() -> None:
    policy = RetryPolicy(attempts=6, initial_delay=0.2, max_delay=1.0, jitter="none")
    assert list(policy.delays()) == [0.2, 0.4, 0.8, 1.0, 1.0]


def test_equal_jitter_keeps_at_least_half_the_step() -> None:
    policy = RetryPolicy(attempts=8, initial_delay=0.2, max_delay=5.0)
    steps = list(RetryPolicy(attempts=8, initial_delay=0.2, max_delay=5.0, jitter="none").delays())
    for _ in range(50):
        for delay, step in zip(policy.delays(), steps, strict=True):
            assert step / 2 <= delay <= step


def test_full_jitter_stays_within_the_step() -> None:
    policy = RetryPolicy(attempts=5, jitter="full")
    delays = list(policy.delays(random.Random(1)))
    assert len(delays) == 4
    assert all(0 <= d <= 0.2 * 2**n for n, d in enumerate(delays))


@pytest.mark.parametrize("bad", [{"attempts": 0}, {"initial_delay": -1.0}, {"deadline": -1.0}])
def test_policy_rejects_bad_values(bad: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        RetryPolicy(**bad)  # type: ignore[arg-type]


async def test_retries_until_success() -> None:
    fake, fn = FakeTime(), Flaky(Transient(), Transient())
    assert await _run(fn, RetryPolicy(), fake) == "ok"
    assert fn.calls == 3
    assert len(fake.sleeps) == 2


async def test_a_fatal_error_is_raised_at_once() -> None:
    fake, fn = FakeTime(), Flaky(Fatal())
    with pytest.raises(Fatal):
        await _run(fn, RetryPolicy(), fake)
    assert fn.calls == 1
    assert fake.sleeps == []


async def test_attempts_bound_the_calls() -> None:
    fake, fn = FakeTime(), Flaky(*[Transient() for _ in range(10)])
    with pytest.raises(Transient):
        await _run(fn, RetryPolicy(attempts=3), fake)
    assert fn.calls == 3


async def test_the_deadline_bounds_the_calls() -> None:
    policy = RetryPolicy(attempts=10, initial_delay=1.0, max_delay=1.0, deadline=2.5, jitter="none")
    fake, fn = FakeTime(), Flaky(*[Transient() for _ in range(10)])
    with pytest.raises(Transient):
        await _run(fn, policy, fake)
    assert fn.calls == 3  # at t=0, 1, 2; a fourth would start at 3 > 2.5
    assert fake.sleeps == [1.0, 1.0]


async def test_a_minimum_delay_that_fits_the_deadline_is_waited() -> None:
    policy = RetryPolicy(deadline=100.0)
    fake, fn = FakeTime(), Flaky(Transient())
    assert await _run(fn, policy, fake, min_delay=lambda exc: 60.0) == "ok"
    assert fake.sleeps == [60.0]


async def test_a_minimum_delay_beyond_the_deadline_fails_at_once() -> None:
    fake, fn = FakeTime(), Flaky(Transient())
    with pytest.raises(Transient):
        await _run(fn, RetryPolicy(deadline=30.0), fake, min_delay=lambda exc: 60.0)
    assert fn.calls == 1


async def test_on_retry_sees_each_retry() -> None:
    seen: list[tuple[int, str, float]] = []
    fake, fn = FakeTime(), Flaky(Transient("a"), Transient("b"))
    policy = RetryPolicy(jitter="none")
    on_retry = lambda n, exc, delay: seen.append((n, str(exc), delay))  # noqa: E731
    await _run(fn, policy, fake, on_retry=on_retry)
    assert seen == [(1, "a", 0.2), (2, "b", 0.4)]


async def test_real_sleep_with_tiny_delays() -> None:
    fn = Flaky(Transient())
    policy = RetryPolicy(initial_delay=0.001, max_delay=0.001)
    assert await call_with_retry(fn, policy=policy, is_retryable=_retryable) == "ok"
    assert fn.calls == 2
