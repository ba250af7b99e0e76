"""Waiting, bounded, for a condition that no event announces (a queue draining elsewhere)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable


async def until(check: Callable[[], bool], seconds: float, *, step: float = 0.02) -> bool:
    """Return once `check()` holds (True) or after `seconds` (False), checking every `step`.

    Used where the state is spread over objects that signal nothing (channel queues, stream
    queues during a move); a move is rare, so polling costs nothing that matters."""
    deadline = time.monotonic() + seconds
    while not check():
        if time.monotonic() >= deadline:
            return False
        await asyncio.sleep(step)
    return True
