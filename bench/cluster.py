"""Scenario: scale-out (docs/scale-out.md), in one run.

- throughput of 1 vs 3 clustered instances (a ladder of `ivh/get_session` rates over many
  sessions; the highest rate answered in full with p99 < 50 ms), with each instance's CPU share;
- a rolling restart of all three under a steady load: requests answered, errors, p99 and max
  latency during the restarts against the steady state before them;
- the takeover after a SIGKILL of the busiest instance: seconds until every one of its sessions
  has a command socket again (as the emulator counts them).
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.loadgen import MqttRequester, paced
from bench.procs import BridgeProc, Broker, EmulatorProc, bridge_env
from bench.stats import summary
from bench.upstream import Admin, http_client
from bridge.core.ownership import owner

P99_LIMIT_MS = 50.0
KEEPALIVE = 5


@dataclass
class Fleet:
    """A broker, the emulator and `n` clustered bridge processes."""

    broker: Broker
    emulator: EmulatorProc
    admin: Admin
    base: str
    workdir: Path
    procs: dict[str, BridgeProc] = field(default_factory=dict)

    def env(self, name: str) -> dict[str, str]:
        return bridge_env(
            self.emulator,
            self.broker,
            self.base,
            TENCENT2MQTT_MQTT__CLIENT_ID=f"{self.base}-{name}",
            TENCENT2MQTT_MQTT__KEEPALIVE=str(KEEPALIVE),
            TENCENT2MQTT_CLUSTER__ENABLED="true",
            TENCENT2MQTT_CLUSTER__INSTANCE_ID=name,
            TENCENT2MQTT_CLUSTER__SETTLE="1",
            TENCENT2MQTT_IVH__POLL_INTERVAL="1",
            TENCENT2MQTT_IVH__CHANNEL__AUTO_CONNECT="true",
            TENCENT2MQTT_IVH__CHANNEL__RECONNECT_MAX_DELAY="0.5",
        )

    def start(self, name: str) -> None:
        proc = BridgeProc(self.workdir, self.env(name))
        proc.start()
        self.procs[name] = proc

    async def sockets(self) -> dict[str, dict[str, int]]:
        stats = await self.admin.call("GET", "/stats")
        return dict(stats["sockets"])

    def stop(self) -> None:
        for proc in self.procs.values():
            proc.stop()
        self.procs.clear()


@contextlib.asynccontextmanager
async def fleet(workdir: Path) -> AsyncIterator[Fleet]:
    """A broker and an emulator; the bridges are started by the scenario."""
    workdir.mkdir(parents=True, exist_ok=True)
    broker = Broker(workdir)
    emulator = EmulatorProc(workdir)
    broker.start()
    try:
        emulator.start()
        async with http_client() as http:
            f = Fleet(broker, emulator, Admin(http, emulator.base_url), "", workdir)
            try:
                yield f
            finally:
                f.stop()
    finally:
        emulator.stop()
        broker.kill()


class Timed:
    """Requests with our own transactions on a requester; latency and answer time of each."""

    def __init__(self, mqtt: MqttRequester) -> None:
        self.mqtt = mqtt
        self.sent: dict[str, float] = {}
        self.answers: dict[str, tuple[float, float, bool]] = {}  # tx -> (at, latency, ok)
        self.duplicates = 0
        self.instances: dict[str, str] = {}  # instance -> its membership state
        mqtt.on_message = self._arrived

    def send(self, action: str, body: dict[str, Any]) -> None:
        tx = uuid.uuid4().hex[:12]
        payload = f'{{"session_id":"{body["session_id"]}","transaction":"{tx}"}}'.encode()
        self.sent[tx] = time.perf_counter()
        self.mqtt.publish_now(f"{self.mqtt.base}/bridge/request/{action}", payload)

    def _arrived(self, topic: str, body: Any, now: float) -> None:
        tx = body.get("transaction") if isinstance(body, dict) else None
        if not isinstance(tx, str) or tx not in self.sent:
            return
        if tx in self.answers:
            self.duplicates += 1
            return
        self.answers[tx] = (now, now - self.sent[tx], body.get("status") == "ok")

    def window(self, start: float, end: float) -> dict[str, Any]:
        sent = [tx for tx, at in self.sent.items() if start <= at < end]
        got = [self.answers[tx] for tx in sent if tx in self.answers]
        return {
            "sent": len(sent),
            "answered": len(got),
            "errors": sum(1 for _, _, ok in got if not ok),
            "latency_ms": summary([lat for _, lat, _ in got]),
        }


async def _members(f: Fleet, names: list[str], timeout: float = 30) -> None:
    """Until every named instance answers a health check as active (its own view)."""
    deadline = time.monotonic() + timeout
    async with MqttRequester(f.broker.port, f.base) as probe:
        seen: dict[str, Any] = {}

        def catch(topic: str, body: Any, _: float) -> None:
            if topic.endswith("/health_check") and isinstance(body, dict):
                cluster = body.get("data", {}).get("cluster", {})
                seen["active"] = set(cluster.get("active", []))

        probe.on_message = catch
        while time.monotonic() < deadline:
            probe.publish_now(f"{f.base}/bridge/request/bridge/health_check", b"{}")
            await asyncio.sleep(0.3)
            if seen.get("active") == set(names):
                return
    raise RuntimeError(f"the cluster did not settle on {names}")


async def _throughput(f: Fleet, names: list[str], sids: list[str], quick: bool) -> dict[str, Any]:
    rates = [300, 600, 1000] if quick else [500, 1000, 1500, 2000, 3000]
    seconds = 2.0 if quick else 4.0
    ladder: list[dict[str, Any]] = []
    async with MqttRequester(f.broker.port, f.base) as mqtt:
        await mqtt.run(200, 200, lambda i: ("ivh/get_session", {"session_id": sids[i % 30]}))
        for rate in rates:
            before = {n: f.procs[n].sample() for n in names}
            count = int(rate * seconds)
            out = await mqtt.run(
                rate, count, lambda i: ("ivh/get_session", {"session_id": sids[i % len(sids)]})
            )
            after = {n: f.procs[n].sample() for n in names}
            lat = summary(out.latencies)
            ladder.append(
                {
                    "rate": rate,
                    "sent": out.sent,
                    "answered": out.answered,
                    "errors": out.errors,
                    "p99_ms": lat.get("p99_ms"),
                    "cpu_share": {n: round(before[n].cpu_share(after[n]), 3) for n in names},
                }
            )
    good: list[int] = [
        s["rate"]
        for s in ladder
        if s["answered"] == s["sent"] and not s["errors"] and (s["p99_ms"] or 1e9) < P99_LIMIT_MS
    ]
    return {"sustained_per_s": max(good, default=0), "ladder": ladder}


async def _rolling(f: Fleet, names: list[str], sids: list[str], quick: bool) -> dict[str, Any]:
    rate = 50 if quick else 100
    async with MqttRequester(f.broker.port, f.base) as mqtt:
        timed = Timed(mqtt)
        stop = asyncio.Event()

        def fire(k: int) -> None:
            timed.send("ivh/get_session", {"session_id": sids[k % len(sids)]})

        async def load() -> None:
            while not stop.is_set():
                await paced(rate, rate, fire)

        task = asyncio.create_task(load())
        steady_start = time.perf_counter()
        await asyncio.sleep(3 if quick else 6)
        steady_end = time.perf_counter()
        for name in names:
            f.procs[name].stop()  # SIGTERM; it hands its sessions over and exits
            f.start(name)
            await _members(f, names)
        restarts_end = time.perf_counter()
        stop.set()
        await task
        await asyncio.sleep(2.0)
    steady = timed.window(steady_start, steady_end)
    during = timed.window(steady_end, restarts_end)
    return {
        "rate_per_s": rate,
        "restarts_s": round(restarts_end - steady_end, 1),
        "steady": steady,
        "during_restarts": during,
        "duplicate_answers": timed.duplicates,
    }


async def _takeover(f: Fleet, names: list[str], sids: list[str]) -> dict[str, Any]:
    busiest = max(names, key=lambda n: sum(owner(s, names) == n for s in sids))
    theirs = [s for s in sids if owner(s, names) == busiest]
    opened = {s: (await f.sockets()).get(s, {}).get("opened", 0) for s in theirs}
    f.procs[busiest].proc.send_signal(signal.SIGKILL)  # type: ignore[union-attr]
    killed = time.monotonic()
    while time.monotonic() - killed < 30:
        stats = await f.sockets()
        if all(stats.get(s, {}).get("opened", 0) > opened[s] for s in theirs):
            break
        await asyncio.sleep(0.05)
    took = time.monotonic() - killed
    f.procs.pop(busiest)
    return {"killed": busiest, "its_sessions": len(theirs), "takeover_s": round(took, 2)}


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """1 vs 3 instances, a rolling restart under load, a SIGKILL takeover."""
    out: dict[str, Any] = {"p99_limit_ms": P99_LIMIT_MS, "keepalive_s": KEEPALIVE}
    async with fleet(workdir / "cluster") as f:
        sids = await f.admin.ivh_sessions(30)
        for n in (1, 3):
            f.stop()
            f.base = f"c{uuid.uuid4().hex[:8]}"
            names = [f"i{k}" for k in range(n)]
            for name in names:
                f.start(name)
            await _members(f, names)
            await asyncio.sleep(2.0)  # channels open, the poll settles
            out[f"throughput_{n}"] = await _throughput(f, names, sids, quick)
            cpu_idle = {name: f.procs[name].sample() for name in names}
            await asyncio.sleep(1.0)
            out[f"idle_cpu_share_{n}"] = {
                name: round(cpu_idle[name].cpu_share(f.procs[name].sample()), 3) for name in names
            }
        names = ["i0", "i1", "i2"]
        out["rolling_restart"] = await _rolling(f, names, sids, quick)
        await asyncio.sleep(2.0)
        out["sigkill_takeover"] = await _takeover(f, names, sids)
    out["note"] = (
        "every instance receives every request and the owner acts: at 3 instances the broker "
        "delivers each request three times (docs/scale-out.md)"
    )
    return out
