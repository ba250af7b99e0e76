"""Scenario 2: the highest offered rate answered in full, with no error and p99 < 50 ms.

A ladder of offered rates per action, through the bridge and (the ceiling) directly with
httpx against the same emulator; the bridge's CPU share at each step; p50/p99 at 1,000/s.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.loadgen import HttpRequester, Outcome
from bench.procs import ProcSample
from bench.stack import Stack, stack
from bench.stats import summary

P99_LIMIT_MS = 50.0
Step = Callable[[float, int], Awaitable[Outcome]]


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Per action: the bridge's ladder and sustained rate, and the direct ceiling."""
    full = [200, 300, 500, 700, 850, 1000, 1500, 2000, 2500, 3000, 3500, 4000, 5000]
    rates = [200, 400, 700, 1000] if quick else full
    seconds = 2.0 if quick else 5.0
    out: dict[str, Any] = {"p99_limit_ms": P99_LIMIT_MS, "step_seconds": seconds}
    async with stack(workdir / "throughput") as s:
        ivh_sid = (await s.admin.ivh_sessions(1))[0]
        desk_sid = await s.admin.desk_session()
        actions: dict[str, tuple[Step, Step]] = {
            "desk/get_session_state": (
                _via_bridge(s, "desk/get_session_state", {"session_id": desk_sid}),
                _direct(s, "desk", "get_session_state", {"SessionId": desk_sid}),
            ),
            "ivh/get_session": (
                _via_bridge(s, "ivh/get_session", {"session_id": ivh_sid}),
                _direct(s, "ivh", "statsession", {"SessionId": ivh_sid}),
            ),
        }
        for name, (bridge_step, direct_step) in actions.items():
            await bridge_step(200, 200)  # warm up pools and caches
            await direct_step(200, 200)
            cost = {
                "bridge_path": await _cpu_cost(bridge_step, s),
                "direct_path": await _cpu_cost(direct_step, s),
            }
            bridge = await _ladder(bridge_step, rates, seconds, s)
            direct = await _ladder(direct_step, rates, seconds, None)
            out[name] = {
                "bridge_sustained_per_s": _sustained(bridge),
                "direct_httpx_sustained_per_s": _sustained(direct),
                "cpu_ms_per_request_at_100": cost,
                "bridge_at_1000": _at(bridge, 1000),
                "direct_at_1000": _at(direct, 1000),
                "bridge_ladder": bridge,
                "direct_ladder": direct,
            }
    out["target"] = {"sustained_per_s": 3000, "p99_ms_at_1000": 10.0}
    return out


def _via_bridge(s: Stack, action: str, payload: dict[str, Any]) -> Step:
    async def step(rate: float, count: int) -> Outcome:
        return await s.mqtt.run(rate, count, lambda _: (action, payload))

    return step


def _direct(s: Stack, service: str, api: str, body: dict[str, Any]) -> Step:
    call = s.direct.ivh if service == "ivh" else s.direct.desk

    async def one(_: int) -> str | None:
        code, _reply = await call(api, body)
        return code

    async def step(rate: float, count: int) -> Outcome:
        return await HttpRequester(one).run(rate, count)

    return step


async def _ladder(
    step: Step, rates: list[int], seconds: float, s: Stack | None
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    for rate in rates:
        before = s.bridge.sample() if s else None
        outcome = await step(rate, int(rate * seconds))
        row = _row(rate, outcome)
        if s is not None and before is not None:
            after = ProcSample.of(s.bridge.pid)
            row["bridge_cpu_share"] = round(before.cpu_share(after), 3)
            per = (after.cpu_s - before.cpu_s) * 1000 / max(1, outcome.sent)
            row["bridge_cpu_ms_per_request"] = round(per, 3)
        results.append(row)
        if not row["ok"]:
            break
    return results


async def _cpu_cost(step: Step, s: Stack) -> dict[str, float]:
    """CPU milliseconds per request of each process at a light 100/s: steadier than latency
    on a shared machine, since it does not count the time a process waits for a core."""
    pids = {"bridge": s.bridge.pid, "emulator": s.emulator.pid, "load_generator": os.getpid()}
    before = {name: ProcSample.of(pid) for name, pid in pids.items()}
    outcome = await step(100, 300)
    after = {name: ProcSample.of(pid) for name, pid in pids.items()}
    sent = max(1, outcome.sent)
    return {n: round((after[n].cpu_s - before[n].cpu_s) * 1000 / sent, 3) for n in pids}


def _row(rate: int, outcome: Outcome) -> dict[str, Any]:
    stats = summary(outcome.latencies)
    p99 = stats["p99_ms"]
    ok = (
        outcome.errors == 0
        and len(outcome.latencies) == outcome.sent
        and p99 is not None
        and p99 < P99_LIMIT_MS
    )
    return {
        "offered_per_s": rate,
        "achieved_send_per_s": round(outcome.sent / outcome.send_seconds, 1)
        if outcome.send_seconds
        else None,
        "sent": outcome.sent,
        "ok_answers": len(outcome.latencies),
        "errors": outcome.errors,
        "error_codes": outcome.error_codes,
        "p50_ms": stats["p50_ms"],
        "p99_ms": p99,
        "ok": ok,
    }


def _sustained(ladder: list[dict[str, Any]]) -> int:
    passed = [row["offered_per_s"] for row in ladder if row["ok"]]
    return max(passed) if passed else 0


def _at(ladder: list[dict[str, Any]], rate: int) -> dict[str, Any] | None:
    return next((row for row in ladder if row["offered_per_s"] == rate), None)
