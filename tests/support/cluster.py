"""Several real bridge processes in one cluster (docs/scale-out.md), for tests and benchmarks."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

from bridge.core.ownership import owner
from bridge.emulator import Emulator
from tests.support.bridge import BridgeProcess, mqtt_env
from tests.support.broker import Broker
from tests.support.mqtt_probe import Probe

KEEPALIVE = 2  # seconds: a frozen instance is given up after ~3 s
# ...by the MQTT rule (1.5 keepalives); mosquitto 2.0 looks at keepalives only every 6 s
# (keepalive.c: `last_keepalive_check + 5 < now`), so a frozen client goes 3 to 9 s after its
# last packet: what a test waits for its will.
FROZEN_WILL_WITHIN = 1.5 * KEEPALIVE + 6 + 2


def cluster_env(
    broker: Broker, base: str, emu: Emulator, name: str, **extra: str
) -> dict[str, str]:
    """Environment of one clustered instance: both services on the emulator, fast timings."""
    cfg = emu.config
    env = {
        **mqtt_env(broker, base),
        "TENCENT2MQTT_MQTT__CLIENT_ID": f"{base}-{name}",
        "TENCENT2MQTT_MQTT__KEEPALIVE": str(KEEPALIVE),
        "TENCENT2MQTT_CLUSTER__ENABLED": "true",
        "TENCENT2MQTT_CLUSTER__INSTANCE_ID": name,
        "TENCENT2MQTT_CLUSTER__SETTLE": "0.5",
        "TENCENT2MQTT_BRIDGE__SHUTDOWN_TIMEOUT": "5",
        "TENCENT2MQTT_IVH__ENABLED": "true",
        "TENCENT2MQTT_IVH__BASE_URL": emu.base_url,
        "TENCENT2MQTT_IVH__APPKEY": cfg.appkey,
        "TENCENT2MQTT_IVH__ACCESS_TOKEN": cfg.access_token,
        "TENCENT2MQTT_IVH__POLL_INTERVAL": "0.3",
        "TENCENT2MQTT_IVH__CLOSED_RETENTION": "5",
        "TENCENT2MQTT_IVH__CHANNEL__URL": emu.ws_url,
        "TENCENT2MQTT_IVH__CHANNEL__HEARTBEAT_INTERVAL": "5",
        "TENCENT2MQTT_IVH__CHANNEL__RECONNECT_MAX_DELAY": "0.5",
        "TENCENT2MQTT_DESK__ENABLED": "true",
        "TENCENT2MQTT_DESK__BASE_URL": emu.base_url,
        "TENCENT2MQTT_DESK__SDKAPPID": str(cfg.sdkappid),
        "TENCENT2MQTT_DESK__IDENTIFIER": cfg.identifier,
        "TENCENT2MQTT_DESK__SECRET_KEY": cfg.secret_key,
        "TENCENT2MQTT_DESK__POLL_INTERVAL": "0.5",
        "TENCENT2MQTT_DESK__RATE_LIMIT": "1000",
        "TENCENT2MQTT_DESK__ENDED_RETENTION": "2",
        "TENCENT2MQTT_RETRY__INITIAL_DELAY": "0.02",
        "TENCENT2MQTT_RETRY__MAX_DELAY": "0.1",
    }
    env.update(extra)
    return env


class Cluster:
    """`n` bridge processes named b0..b<n-1> under one base topic."""

    def __init__(
        self,
        broker: Broker,
        base: str,
        emu: Emulator,
        workdir: Path,
        n: int = 3,
        *,
        each: dict[str, dict[str, str]] | None = None,
        **extra: str,
    ) -> None:
        """`extra`: settings of every instance; `each`: of one instance, by name."""
        self.names = [f"b{i}" for i in range(n)]
        self._env = {
            name: cluster_env(broker, base, emu, name, **extra, **(each or {}).get(name, {}))
            for name in self.names
        }
        self._workdir = workdir
        self.procs: dict[str, BridgeProcess] = {}
        self.retired: list[BridgeProcess] = []

    def start(self, name: str) -> BridgeProcess:
        """Start (or start again) one instance."""
        old = self.procs.get(name)
        if old is not None:
            self.retired.append(old)
        proc = BridgeProcess(self._env[name], self._workdir)
        proc.start()
        self.procs[name] = proc
        return proc

    def start_all(self) -> None:
        """Start every instance."""
        for name in self.names:
            self.start(name)

    @contextlib.asynccontextmanager
    async def up(self, probe: Probe) -> AsyncIterator[None]:
        """Every instance started and seen active; whatever still runs is killed on the way out."""
        self.start_all()
        try:
            await all_active(probe, self.names)
            yield
        finally:
            self.stop_all()

    def signal(self, name: str, sig: signal.Signals) -> None:
        """Signal one instance."""
        self.procs[name].signal(sig)

    async def terminate(self, name: str, timeout: float = 20.0) -> int:
        """SIGTERM one instance and wait for it to exit; its exit code."""
        self.signal(name, signal.SIGTERM)
        return await asyncio.to_thread(self.procs[name].wait, timeout)

    def stop_all(self) -> None:
        """Kill whatever still runs (cleanup)."""
        for proc in [*self.procs.values(), *self.retired]:
            proc.stop()

    def logs(self) -> str:
        """Every instance's log, for assertion messages."""
        parts = [f"--- {n}\n{p.log()[-4000:]}" for n, p in self.procs.items()]
        return "\n".join(parts)


def docs(probe: Probe) -> dict[str, Any]:
    """The latest membership document of each instance as the probe saw them (cleared: gone)."""
    head = f"{probe.base}/bridge/instances/"
    latest: dict[str, Any] = {}
    for m in probe.messages:
        if m.topic.startswith(head):
            latest[m.topic[len(head) :]] = json.loads(m.payload) if m.payload else None
    return {k: v for k, v in latest.items() if v is not None}


def active(probe: Probe) -> set[str]:
    """Instances whose latest document says active."""
    return {name for name, doc in docs(probe).items() if doc.get("state") == "active"}


async def until(check: Callable[[], bool], timeout: float, what: str) -> None:
    """Wait (bounded) until `check()` holds."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.05)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what}") from None


async def all_active(probe: Probe, names: list[str], timeout: float = 20.0) -> None:
    """Wait until exactly `names` are active."""
    await until(lambda: active(probe) == set(names), timeout, f"{names} active")


def owner_of(key: str, names: set[str] | list[str]) -> str:
    """The owner of `key` among `names`, by the documented rule."""
    found = owner(key, names)
    assert found is not None
    return found


def socket_stats(emu: Emulator) -> dict[str, dict[str, int]]:
    """Sockets per session at the emulator (opened, closed, refused_busy)."""
    return {sid: dict(c) for sid, c in emu.state.journal.stats.sockets.items()}


def calls(emu: Emulator, api: str) -> int:
    """Calls of one API (the path's last part) the emulator served."""
    return sum(n for path, n in emu.state.journal.stats.calls.items() if path.endswith(api))
