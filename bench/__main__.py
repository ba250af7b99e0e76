"""`python -m bench [--quick] [--only NAME ...]`: run the scenarios, print one JSON document."""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench import (
    audio,
    cluster,
    command,
    desk_callback,
    events,
    httpcost,
    polling,
    streams,
    throughput,
)

Scenario = Callable[..., Awaitable[dict[str, Any]]]
SCENARIOS: dict[str, Scenario] = {
    "command": command.run,
    "throughput": throughput.run,
    "streams": streams.run,
    "events": events.run,
    "polling": polling.run,
    "httpcost": httpcost.run,
    "desk_callback": desk_callback.run,
    "cluster": cluster.run,
    "audio": audio.run,
}
RESULTS = Path(__file__).parent / "results"


def main() -> None:
    """Parse arguments, run, print and save the report."""
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="short runs (for development)")
    parser.add_argument("--only", action="append", choices=sorted(SCENARIOS), help="repeatable")
    args = parser.parse_args()
    report = asyncio.run(_run(args.only or list(SCENARIOS), quick=args.quick))
    text = json.dumps(report, indent=2)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "latest.json").write_text(text + "\n")
    print(text)


async def _run(names: list[str], *, quick: bool) -> dict[str, Any]:
    report: dict[str, Any] = {
        "started_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "command": " ".join(["python -m bench", *sys.argv[1:]]),
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
        "quick": quick,
        "scenarios": {},
    }
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        for name in names:
            started, stolen = time.monotonic(), _steal_s()
            print(f"bench: {name} ...", file=sys.stderr, flush=True)
            result = await SCENARIOS[name](Path(tmp), quick=quick)
            result["seconds"] = round(time.monotonic() - started, 1)
            result["cpu_steal_s"] = round(_steal_s() - stolen, 2)
            report["scenarios"][name] = result
            print(f"bench: {name}: {json.dumps(result)}", file=sys.stderr, flush=True)
    return report


def _steal_s() -> float:
    """CPU seconds the hypervisor gave to other guests, all cores (Linux `/proc/stat`): a run
    on a VM whose cores were busy elsewhere shows it here."""
    try:
        fields = Path("/proc/stat").read_text().split("\n", 1)[0].split()
        return int(fields[8]) / os.sysconf("SC_CLK_TCK")
    except (OSError, IndexError, ValueError):
        return 0.0


if __name__ == "__main__":
    main()
