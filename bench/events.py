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
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.procs import ProcSample
from bench.stack import Stack, stack
from bench.stats import summary


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Events/s and latency at an offered rate and in a burst; RSS per open channel."""
    channels = 1000
    settings = {
        "TENCENT2MQTT_IVH__POLL_INTERVAL": "5",  # the default: it finds the sessions to open
        "TENCENT2MQTT_IVH__CHANNEL__AUTO_CONNECT": "true",
    }
    async with stack(workdir / "events", **settings) as s:
        await asyncio.sleep(1.0)
        before = s.bridge.sample()
        sessions = await s.admin.ivh_sessions(channels)
        opened = await _wait_open(s, channels, timeout=120)
        await asyncio.sleep(2.0)
        after = s.bridge.sample()
        seconds = 2 if quick else 5
        # 5,000 frames/s as a steady stream: every 10 ms, one frame on each of 50 channels
        # (a different 50 each time, so each channel gets 5 frames/s).
        slices = [sessions[i : i + 50] for i in range(0, len(sessions), 50)]
        # Warm-up, not counted: the same stream for 0.2 s, so that each channel's first event
        # (its topic new to the broker, and to each process's caches) is behind us.
        await _pushes(s, slices, ticks_per_s=100, seconds=0.2)
        await asyncio.sleep(0.5)
        steady = await _pushes(s, slices, ticks_per_s=100, seconds=seconds)
        # The worst case: one frame on every channel at once, 10 (quick) or 20 times.
        burst = await _pushes(s, [None], ticks_per_s=1000, seconds=0.001 * (10 if quick else 20))
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
    s: Stack, slices: Sequence[list[str] | None], *, ticks_per_s: float, seconds: float
) -> dict[str, Any]:
    """`ticks_per_s` times a second, one frame to each channel of the next slice (None: all
    open channels); what came out on MQTT."""
    rounds = max(1, round(ticks_per_s * seconds))
    pids = {"bridge": s.bridge.pid, "emulator": s.emulator.pid, "bench": os.getpid()}
    before = {name: ProcSample.of(pid) for name, pid in pids.items()}
    async with Subscriber(s, f"{s.base}/ivh/+/event") as sub:
        started = time.time()
        expected = 0
        for i in range(rounds):
            delay = started + i / ticks_per_s - time.time()
            if delay > 0:
                await asyncio.sleep(delay)
            frame = {"Type": 4, "Content": "bench", "BenchT": time.time()}
            targets = slices[i % len(slices)]
            sent = await s.admin.call("POST", "/ivh/push", {"frame": frame, "sessions": targets})
            expected += int(sent["sent"])
        await sub.wait_for(expected, timeout=10)
    latencies, last = sub.latencies()
    after = {name: ProcSample.of(pid) for name, pid in pids.items()}
    cpu = {f"{n}_cpu_share": round(before[n].cpu_share(after[n]), 2) for n in pids}
    bridge_cpu = after["bridge"].cpu_s - before["bridge"].cpu_s
    cpu["bridge_cpu_ms_per_event"] = round(bridge_cpu * 1000 / max(1, len(latencies)), 3)
    span = last[0] - started
    return {
        "events_expected": expected,
        "events_received": len(latencies),
        "events_per_s": round(len(latencies) / span, 1) if span > 0 else None,
        "offered_per_s": round(expected / (rounds / ticks_per_s)) if rounds > 1 else None,
        **summary(latencies),
        **cpu,
    }


class Subscriber:
    """`mosquitto_sub` stamping each event with its arrival time (`%U`): a consumer in C, so
    the bench's own MQTT parsing does not compete with the bridge for the two cores (a Python
    consumer took 0.6 of a core at 5,000 events/s). It writes to a file, not a pipe: a pipe
    holds about 250 events, so whenever the bench process was not scheduled for 50 ms,
    `mosquitto_sub` blocked on it and stamped what came next late. Lines are parsed after the
    run."""

    def __init__(self, s: Stack, topic: str) -> None:
        self._s = s
        self._topic = topic
        self._path = s.bridge.workdir / f"events-{uuid.uuid4().hex[:8]}.txt"
        self._read_upto = 0  # bytes of the file already counted
        self._lines = 0  # lines so far, events and markers
        self._events = 0  # event lines so far
        self._proc: asyncio.subprocess.Process | None = None

    async def __aenter__(self) -> Subscriber:
        port = str(self._s.broker.port)
        with self._path.open("wb") as out:  # the child keeps its own descriptor
            self._proc = await asyncio.create_subprocess_exec(
                *("mosquitto_sub", "-h", "127.0.0.1", "-p", port, "-V", "mqttv5", "--nodelay"),
                *("-q", "0", "-t", self._topic, "-t", f"{self._s.base}/bench/ready"),
                *("-F", "%U %p"),
                stdout=out,
            )
        await self._ready()
        return self

    async def _ready(self) -> None:
        """Publish a marker until it comes back: the subscription is in place."""
        for _ in range(100):
            self._s.mqtt.publish_now(f"{self._s.base}/bench/ready", b"{}")
            await asyncio.sleep(0.05)
            if self._count():
                return
        raise RuntimeError("mosquitto_sub did not subscribe")

    def _count(self) -> int:
        """Read what the file gained since the last look; the lines so far."""
        with self._path.open("rb") as f:
            f.seek(self._read_upto)
            chunk = f.read()
        whole = chunk[: chunk.rfind(b"\n") + 1]  # a line still being written waits
        self._read_upto += len(whole)
        self._lines += whole.count(b"\n")
        self._events += whole.count(b'"bench_t"')
        return self._lines

    async def wait_for(self, count: int, *, timeout: float) -> None:
        """Until `count` events arrived, or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._count()
            if self._events >= count:
                return
            await asyncio.sleep(0.05)

    def latencies(self) -> tuple[list[float], list[float]]:
        """Each event's latency in seconds, and the last arrival time (in a list)."""
        latencies: list[float] = []
        last = 0.0
        for line in self._path.read_bytes().splitlines():
            stamp, _, payload = line.partition(b" ")
            sent = json.loads(payload).get("data", {}).get("bench_t")
            if isinstance(sent, float):
                latencies.append(float(stamp) - sent)
                last = max(last, float(stamp))
        return latencies, [last]

    async def __aexit__(self, *exc: object) -> None:
        if self._proc is not None and self._proc.returncode is None:
            self._proc.terminate()
            await self._proc.wait()
