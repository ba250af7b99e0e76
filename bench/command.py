"""Scenario 1: `ivh/close_session` through the bridge vs the same HTTP call made directly.

Both paths close sessions of their own (a session closes once), at the same rate, in
alternating blocks so that machine noise hits both alike.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from bench.loadgen import HttpRequester, Outcome
from bench.stack import Stack, stack
from bench.stats import diff, summary

RATE = 200.0


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """p50/p99 of both paths at 200 requests/s and the difference."""
    per_block, blocks = (100, 4) if quick else (200, 15)  # 0.5-1 s blocks, alternating
    async with stack(workdir / "command") as s:
        ids = await s.admin.ivh_sessions(2 * per_block * blocks + 50)
        await _warm_up(s, ids[-50:])
        bridge, direct = Outcome(), Outcome()
        for block in range(blocks):
            mine = ids[2 * block * per_block : (2 * block + 1) * per_block]
            theirs = ids[(2 * block + 1) * per_block : (2 * block + 2) * per_block]
            _merge(direct, await _direct(s, theirs))
            _merge(bridge, await _bridge(s, mine))
    b, d = summary(bridge.latencies), summary(direct.latencies)
    return {
        "rate_per_s": RATE,
        "requests_each": per_block * blocks,
        "bridge": {**b, "errors": bridge.errors},
        "bridge_inner": summary(bridge.inner),
        "direct_httpx": {**d, "errors": direct.errors},
        "added_p50_ms": diff(b["p50_ms"], d["p50_ms"]),
        "added_p99_ms": diff(b["p99_ms"], d["p99_ms"]),
        "target": {"added_p50_ms": 2.0, "added_p99_ms": 10.0},
    }


async def _bridge(s: Stack, ids: list[str]) -> Outcome:
    return await s.mqtt.run(RATE, len(ids), lambda i: ("ivh/close_session", {"session_id": ids[i]}))


async def _direct(s: Stack, ids: list[str]) -> Outcome:
    async def close(i: int) -> str | None:
        code, _ = await s.direct.ivh("closesession", {"SessionId": ids[i]})
        return code

    return await HttpRequester(close).run(RATE, len(ids))


async def _warm_up(s: Stack, ids: list[str]) -> None:
    half = len(ids) // 2
    await _direct(s, ids[:half])
    await _bridge(s, ids[half:])


def _merge(into: Outcome, more: Outcome) -> None:
    into.sent += more.sent
    into.latencies.extend(more.latencies)
    into.inner.extend(more.inner)
    into.errors += more.errors
    for code, n in more.error_codes.items():
        into.error_codes[code] = into.error_codes.get(code, 0) + n
