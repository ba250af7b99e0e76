"""Scenario 5: the cost of one `listsessionofuin` poll as the account grows to 10,000 sessions.

The bridge times the diff-and-publish step of each poll (`ivh.last_poll_ms` in its health);
the bench reads it after every poll, and also the bridge's CPU per poll (the whole poll:
HTTP, JSON, models, diff, publish). Baseline: the same listing fetched directly with httpx.
"""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from typing import Any

from bench.procs import ProcSample
from bench.stack import Stack, stack

INTERVAL = 1.0


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Per size: the first poll (all new), steady polls (nothing changed), CPU per poll."""
    sizes = [100, 1000, 10_000] if quick else [100, 1000, 3000, 10_000]
    curve: list[dict[str, Any]] = []
    settings = {"TENCENT2MQTT_IVH__POLL_INTERVAL": str(INTERVAL)}
    async with stack(workdir / "polling", **settings) as s:
        have = 0
        for size in sizes:
            await s.admin.ivh_sessions(size - have)
            have = size
            curve.append({"sessions": size, **await _measure(s, steady_polls=3 if quick else 6)})
    last = curve[-1]
    return {
        "poll_interval_s": INTERVAL,
        "curve": curve,
        "at_10000_steady_ms": last["steady_diff_publish_ms"],
        "target": {"steady_ms_at_10000": 50.0},
    }


async def _measure(s: Stack, *, steady_polls: int) -> dict[str, Any]:
    seen: dict[int, float] = {}
    first = await _polls(s)
    cpu_start: ProcSample | None = None
    deadline = time.monotonic() + 60 + 3 * steady_polls * INTERVAL
    while time.monotonic() < deadline:
        polls, ms = await _poll_figure(s)
        if polls > first and polls not in seen:
            seen[polls] = ms
            if len(seen) == 2:
                cpu_start = s.bridge.sample()
            if len(seen) >= steady_polls + 2:
                break
        await asyncio.sleep(0.05)
    ordered = [seen[p] for p in sorted(seen)]
    cpu_end = s.bridge.sample()
    steady = ordered[2:] if len(ordered) > 2 else ordered[1:]
    cpu_ms = (cpu_end.cpu_s - cpu_start.cpu_s) * 1000 / (len(ordered) - 2) if cpu_start else None
    return {
        "first_poll_diff_publish_ms": ordered[0] if ordered else None,
        "steady_diff_publish_ms": round(sorted(steady)[len(steady) // 2], 3) if steady else None,
        "steady_samples_ms": steady,
        "bridge_cpu_ms_per_poll": round(cpu_ms, 1) if cpu_ms is not None else None,
        "direct_httpx_fetch_ms": await _direct_fetch(s),
    }


async def _polls(s: Stack) -> int:
    return (await _poll_figure(s))[0]


async def _poll_figure(s: Stack) -> tuple[int, float]:
    ivh = (await s.health()).get("ivh", {})
    return int(ivh.get("polls", 0)), float(ivh.get("last_poll_ms", 0.0))


async def _direct_fetch(s: Stack) -> float:
    """The median of 3 direct listsessionofuin calls with the JSON parsed."""
    times = []
    for _ in range(3):
        started = time.perf_counter()
        await s.direct.ivh("listsessionofuin", {})
        times.append(time.perf_counter() - started)
    return round(sorted(times)[1] * 1000, 1)
