"""`python -m bridge <command>` as a real process, with an environment holding no stray
`TENCENT2MQTT_*` variable: its exit code, its output, and the first config problem it names."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from tests.support import leaks

TRACEBACK = "Traceback (most recent call last)"


@dataclass(frozen=True)
class Outcome:
    """How one command ended."""

    code: int
    out: str
    err: str

    @property
    def problems(self) -> list[str]:
        """The `  key: problem` lines under "invalid configuration:" (exit 2)."""
        lines = self.err.splitlines()
        if "invalid configuration:" not in lines:
            return []
        start = lines.index("invalid configuration:") + 1
        return [line.strip() for line in lines[start:] if line.startswith("  ")]


def clean_env(env: Mapping[str, str]) -> dict[str, str]:
    """This process's environment without its `TENCENT2MQTT_*` variables, plus `env` (whose
    URL passwords the secrets scan now looks for)."""
    leaks.watch().secret_in_urls(*env.values())
    base = {k: v for k, v in os.environ.items() if not k.upper().startswith("TENCENT2MQTT_")}
    return {**base, "TENCENT2MQTT_CONFIG": "", "PYTHONUNBUFFERED": "1", **env}


def bridge_cli(*args: str, env: Mapping[str, str], timeout: float = 30.0) -> Outcome:
    """Run one command to its end."""
    proc = subprocess.run(
        [sys.executable, "-m", "bridge", *args],
        env=clean_env(env),
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    outcome = Outcome(proc.returncode, proc.stdout, proc.stderr)
    leaks.watch().source("bridge cli", lambda: [("stdout", outcome.out), ("stderr", outcome.err)])
    return outcome


def run_until(
    env: Mapping[str, str], ready: str, workdir: Path, *, timeout: float = 20.0
) -> Outcome:
    """`run` until it exits or its log shows `ready`; then SIGTERM it and wait for its end."""
    log = workdir / f"run-{time.monotonic_ns()}.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "bridge", "run"],
            env=clean_env(env),
            stdout=subprocess.DEVNULL,
            stderr=out,
        )
    leaks.watch().source("bridge run", lambda: [("log", log.read_text(errors="replace"))])
    deadline = time.monotonic() + timeout
    try:
        while proc.poll() is None and ready not in log.read_text(errors="replace"):
            if time.monotonic() > deadline:
                raise AssertionError(f"run neither exited nor logged {ready!r} in {timeout} s")
            time.sleep(0.05)
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
        code = proc.wait(15)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
    return Outcome(code, "", log.read_text(errors="replace"))
