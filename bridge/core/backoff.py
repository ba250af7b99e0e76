"""Capped exponential backoff with full jitter, for every reconnect loop."""

from __future__ import annotations

import random
from collections.abc import Iterator


def backoff(initial: float, cap: float) -> Iterator[float]:
    """Capped exponential backoff with full jitter."""
    delay = initial
    while True:
        yield random.uniform(delay / 2, delay)
        delay = min(cap, delay * 2)
