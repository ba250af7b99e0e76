"""The processes of a benchmark: a private mosquitto, the emulator and the bridge, each its own.

The bridge and the emulator run as separate processes so that the bridge's CPU share and RSS
can be read from /proc, and so that the emulator does not share the bridge's event loop.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bridge.cli.demo.broker import Mosquitto as Broker
from bridge.emulator.cli import env_settings

__all__ = ["BridgeProc", "Broker", "EmulatorProc", "ProcSample"]

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(frozen=True)
class ProcSample:
    """CPU seconds (user + system) and RSS of a process at one instant."""

    at: float
    cpu_s: float
    rss_kb: int

    @classmethod
    def of(cls, pid: int) -> ProcSample:
        """Read /proc/<pid>/stat and /proc/<pid>/status."""
        stat = Path(f"/proc/{pid}/stat").read_text()
        fields = stat.rsplit(")", 1)[1].split()
        cpu = (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # utime, stime
        rss = 0
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                rss = int(line.split()[1])
        return cls(at=time.monotonic(), cpu_s=cpu, rss_kb=rss)

    def cpu_share(self, later: ProcSample) -> float:
        """CPU seconds per wall second between two samples (1.0 = one core busy)."""
        wall = later.at - self.at
        return (later.cpu_s - self.cpu_s) / wall if wall > 0 else 0.0


class EmulatorProc:
    """`python -m bridge emulator --port 0` as a child; its first stdout line is its info."""

    def __init__(self, workdir: Path, **options: Any) -> None:
        self.workdir = workdir
        self.options = {"prepare-delay": 0.05, "speak-delay": 0.01, "log-level": "warning"}
        self.options.update(options)
        self.proc: subprocess.Popen[bytes] | None = None
        self.info: dict[str, Any] = {}

    def start(self) -> None:
        """Start it and read its info line."""
        args = [sys.executable, "-m", "bridge", "emulator", "--port", "0"]
        for name, value in self.options.items():
            args += [f"--{name}", str(value)]
        log = (self.workdir / "emulator.log").open("ab")
        self.proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=log)
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the emulator did not start; see {self.workdir}/emulator.log")
        self.info = json.loads(line)

    @property
    def base_url(self) -> str:
        """The HTTP base URL of both APIs and the admin API."""
        return str(self.info["ivh_base_url"])

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """SIGTERM, then SIGKILL if it lingers."""
        _stop(self.proc)


class BridgeProc:
    """`python -m bridge run`, configured by environment variables only."""

    def __init__(self, workdir: Path, env: Mapping[str, str], *, tree: Path | None = None) -> None:
        self.workdir = workdir
        self.tree = tree  # another checkout to run (its own .venv), for an A/B; None: this one
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.env.pop("TENCENT2MQTT_CONFIG", None)
        self.log_path = workdir / f"bridge-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.profiler: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        """Start the process, logging to a file; BENCH_PROFILE=<dir> attaches py-spy to it."""
        python = sys.executable if self.tree is None else str(self.tree / ".venv/bin/python")
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [python, "-m", "bridge", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=self.tree,
            )
        if os.environ.get("BENCH_PROFILE"):
            self.profiler = _profile(self.proc.pid, Path(os.environ["BENCH_PROFILE"]))

    @property
    def pid(self) -> int:
        """Its process id."""
        assert self.proc is not None
        return self.proc.pid

    def sample(self) -> ProcSample:
        """Its CPU time and RSS now."""
        return ProcSample.of(self.pid)

    def stop(self) -> None:
        """SIGTERM (a clean shutdown), then SIGKILL if it lingers."""
        _stop(self.proc)
        if self.profiler is not None:
            self.profiler.wait(30)


def _profile(pid: int, outdir: Path) -> subprocess.Popen[bytes]:
    """py-spy, sampling `pid` until it exits, writing collapsed stacks (a development aid)."""
    outdir.mkdir(parents=True, exist_ok=True)
    out = outdir / f"bridge-{pid}.txt"
    spy = Path(sys.executable).with_name("py-spy")
    args = [str(spy), "record", "-p", str(pid), "-r", "250", "-f", "raw", "-o", str(out)]
    return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def bridge_env(emulator: EmulatorProc, broker: Broker, base: str, **extra: str) -> dict[str, str]:
    """Environment for a bridge on `broker` with both services pointed at `emulator`."""
    env = {
        **env_settings(emulator.info),
        "TENCENT2MQTT_MQTT__URL": broker.url,
        "TENCENT2MQTT_MQTT__BASE_TOPIC": base,
        "TENCENT2MQTT_MQTT__CLIENT_ID": f"bridge-{base}",
        "TENCENT2MQTT_LOG__LEVEL": "warning",
        "TENCENT2MQTT_IVH__POLL_INTERVAL": "3600",
        "TENCENT2MQTT_IVH__CHANNEL__AUTO_CONNECT": "false",
        "TENCENT2MQTT_DESK__POLL_INTERVAL": "3600",
        "TENCENT2MQTT_BRIDGE__HEALTH_INTERVAL": "3600",
    }
    env.update(extra)
    return env


def _stop(proc: subprocess.Popen[bytes] | None) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
