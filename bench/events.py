"""Scenario 4: downstream frames on 1,000 open command channels -> MQTT events.

The emulator pushes one frame to every open socket per admin call (`POST /emulator/ivh/push`);
each frame carries the bench's wall-clock time, so an event's latency is its arrival time
here minus the push time. RSS per channel: the bridge's RSS with the channels open, minus its
RSS before any session existed, over the number of channels.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
from pathlib import Path
from typing import Any

from bench.loadgen import mqtt_client
from bench.procs import ProcSample
from bench.stack import Stack, stack
from bench.stats import summary


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Events/s and latency at an offered rate and in a burst; RSS per open channel."""
    channels = 1000
    settings = {
        "TENCENT2MQTT_IVH__POLL_INTERVAL": "1",
        "TENCENT2MQTT_IVH__CHANNEL__AUTO_CONNECT": "true",
    }
    async with stack(workdir / "events", **settings) as s:
        await asyncio.sleep(1.0)
        before = s.bridge.sample()
        await s.admin.ivh_sessions(channels)
        opened = await _wait_open(s, channels, timeout=120)
        await asyncio.sleep(2.0)
        after = s.bridge.sample()
        steady = await _pushes(s, opened, rounds_per_s=5, seconds=2 if quick else 5)
        burst = await _pushes(s, opened, rounds_per_s=1000, seconds=0.001 * (10 if quick else 20))
    return {
        "open_channels": opened,
        "rss_before_kb": before.rss_kb,
        "rss_with_channels_kb": after.rss_kb,
        "rss_per_channel_kb": round((after.rss_kb - before.rss_kb) / max(1, opened), 1),
        "offered_5000_per_s": steady,
        "burst": burst,
        "target": {"events_per_s": 5000, "p99_ms": 20.0, "rss_per_channel_kb": 100},
    }


async def _wait_open(s: Stack, want: int, *, timeout: float) -> int:
    deadline = time.monotonic() + timeout
    opened = 0
    while time.monotonic() < deadline:
        opened = int((await s.health()).get("ivh", {}).get("open_channels", 0))
        if opened >= want:
            break
        await asyncio.sleep(0.5)
    return opened


async def _pushes(
    s: Stack, channels: int, *, rounds_per_s: float, seconds: float
) -> dict[str, Any]:
    """Push `rounds_per_s` frames per second to every channel; what came out on MQTT."""
    rounds = max(1, round(rounds_per_s * seconds))
    pids = {"bridge": s.bridge.pid, "emulator": s.emulator.pid, "bench": os.getpid()}
    before = {name: ProcSample.of(pid) for name, pid in pids.items()}
    latencies: list[float] = []
    last = [0.0]
    async with mqtt_client(s.broker.port, "events") as client:
        await client.subscribe(f"{s.base}/ivh/+/event", qos=0)
        collector = asyncio.create_task(_collect(client, latencies, last))
        started = time.time()
        for i in range(rounds):
            delay = started + i / rounds_per_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = {"Type": 4, "Content": "bench", "BenchT": time.time()}
            await s.admin.call("POST", "/ivh/push", {"frame": frame})
        expected = rounds * channels
        deadline = time.monotonic() + 10
        while len(latencies) < expected and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        collector.cancel()
        await asyncio.gather(collector, return_exceptions=True)
    after = {name: ProcSample.of(pid) for name, pid in pids.items()}
    cpu = {f"{n}_cpu_share": round(before[n].cpu_share(after[n]), 2) for n in pids}
    bridge_cpu = after["bridge"].cpu_s - before["bridge"].cpu_s
    cpu["bridge_cpu_ms_per_event"] = round(bridge_cpu * 1000 / max(1, len(latencies)), 3)
    span = last[0] - started
    return {
        "events_expected": expected,
        "events_received": len(latencies),
        "events_per_s": round(len(latencies) / span, 1) if span > 0 else None,
        "offered_per_s": rounds_per_s * channels if rounds > 1 else None,
        **summary(latencies),
        **cpu,
    }


async def _collect(client: Any, latencies: list[float], last: list[float]) -> None:
    async for message in client.messages:
        now = time.time()
        payload = message.payload
        if not isinstance(payload, bytes | bytearray):
            continue
        sent = json.loads(payload).get("data", {}).get("bench_t")
        if isinstance(sent, float):
            latencies.append(now - sent)
            last[0] = now
