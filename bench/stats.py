"""Small statistics helpers: percentiles in milliseconds, rounded for the JSON report."""

from __future__ import annotations

from collections.abc import Sequence


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) by nearest rank; None when there are no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q / 100 * len(ordered) + 0.5) - 1))
    return ordered[rank]


def ms(seconds: float | None) -> float | None:
    """Seconds as milliseconds with 3 decimals."""
    return None if seconds is None else round(seconds * 1000, 3)


def summary(latencies: Sequence[float]) -> dict[str, float | int | None]:
    """count, p50, p99 and max of latencies in seconds, reported in ms."""
    return {
        "count": len(latencies),
        "p50_ms": ms(percentile(latencies, 50)),
        "p99_ms": ms(percentile(latencies, 99)),
        "max_ms": ms(max(latencies)) if latencies else None,
    }


def diff(a: float | None, b: float | None) -> float | None:
    """a - b, rounded, when both are known."""
    return None if a is None or b is None else round(a - b, 3)
