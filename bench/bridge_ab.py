"""`python -m bench.bridge_ab OTHER_TREE [ROUNDS [THIS_TREE]]`: the bridge of another checkout
against this one's (or THIS_TREE's), taking turns on one broker and one emulator (this tree's),
so that only the bridge differs and the host's load falls on both alike (docs/performance.md
"Before and after issue 18").

OTHER_TREE is a checkout with its own `.venv` (`git worktree add`, then `scripts/setup` there).
Each round starts each tree's bridge in turn and measures it at RATE/s on `desk/get_session_state`
and `ivh/get_session` (bridge CPU per request, p50/p99, errors). The figures are the medians
over the rounds, and the ratio of this tree's to the other's.
"""

from __future__ import annotations

import asyncio
import json
import statistics
import sys
import tempfile
import uuid
from pathlib import Path
from typing import Any

from bench.loadgen import MqttRequester
from bench.procs import BridgeProc, Broker, EmulatorProc, ProcSample, bridge_env
from bench.stack import Stack, wait_online
from bench.stats import summary
from bench.upstream import Admin, Direct, http_client

RATE = 1000
SECONDS = 3.0
ACTIONS = ("desk/get_session_state", "ivh/get_session")
Request = tuple[str, dict[str, Any]]


async def _one_bridge(
    tree: Path | None, broker: Broker, emulator: EmulatorProc, sids: dict[str, str], tmp: Path
) -> dict[str, float]:
    base = f"b{uuid.uuid4().hex[:8]}"
    bridge = BridgeProc(tmp, bridge_env(emulator, broker, base), tree=tree)
    bridge.start()
    figures: dict[str, float] = {}
    try:
        async with http_client() as http, MqttRequester(broker.port, base) as mqtt:
            admin = Admin(http, emulator.base_url)
            s = Stack(
                broker, emulator, bridge, base, http, admin, Direct(http, emulator.info), mqtt
            )
            await wait_online(s)
            for action in ACTIONS:
                request = (action, {"session_id": sids[action]})

                def make(_: int, r: Request = request) -> Request:
                    return r

                await mqtt.run(200, 400, make)  # warm
                before = ProcSample.of(bridge.pid)
                outcome = await mqtt.run(RATE, int(RATE * SECONDS), make)
                after = ProcSample.of(bridge.pid)
                stats = summary(outcome.latencies)
                key = action.replace("/", ".")
                figures[f"{key}.cpu_ms_per_request"] = (
                    (after.cpu_s - before.cpu_s) * 1000 / max(1, outcome.sent)
                )
                figures[f"{key}.p50_ms"] = float(stats["p50_ms"] or 0)
                figures[f"{key}.p99_ms"] = float(stats["p99_ms"] or 0)
                figures[f"{key}.errors"] = float(outcome.sent - outcome.answered)
    finally:
        bridge.stop()
    return figures


async def run(other: Path, rounds: int, this: Path | None = None) -> dict[str, Any]:
    """Alternate the two bridges `rounds` times; medians and ratios."""
    with tempfile.TemporaryDirectory(prefix="bench-bridge-ab-") as name:
        tmp = Path(name)
        broker, emulator = Broker(tmp), EmulatorProc(tmp)
        broker.start()
        emulator.start()
        try:
            async with http_client() as http:
                admin = Admin(http, emulator.base_url)
                sids = {
                    "desk/get_session_state": await admin.desk_session(),
                    "ivh/get_session": (await admin.ivh_sessions(1))[0],
                }
            runs: dict[str, list[dict[str, float]]] = {"other": [], "this": []}
            for i in range(rounds):
                order: list[tuple[str, Path | None]] = [("other", other), ("this", this)]
                order = order if i % 2 == 0 else order[::-1]
                for label, tree in order:
                    runs[label].append(await _one_bridge(tree, broker, emulator, sids, tmp))
        finally:
            emulator.stop()
            broker.kill()
    medians = {
        label: {k: round(statistics.median(r[k] for r in rs), 3) for k in rs[0]}
        for label, rs in runs.items()
    }
    ratio = {
        k: round(medians["this"][k] / medians["other"][k], 3)
        for k in medians["this"]
        if medians["other"][k]
    }
    return {
        "rate_per_s": RATE,
        "seconds": SECONDS,
        "rounds": rounds,
        "median": medians,
        "this_over_other": ratio,
        "runs": runs,
    }


if __name__ == "__main__":
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 4
    this = Path(sys.argv[3]).resolve() if len(sys.argv) > 3 else None
    print(json.dumps(asyncio.run(run(Path(sys.argv[1]).resolve(), rounds, this)), indent=2))
