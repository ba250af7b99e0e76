"""Running the bridge for tests: in-process (fast, inspectable) or as a real subprocess."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator, Mapping
from pathlib import Path
from typing import Any

from bridge.app import App
from bridge.config import Settings
from tests.support import leaks
from tests.support.broker import Broker


def unique_base() -> str:
    """A base topic no other test uses."""
    return f"t{uuid.uuid4().hex[:10]}"


def settings_for(broker_url: str, base: str, **sections: Mapping[str, Any]) -> Settings:
    """Settings for a test bridge: fast intervals, services off unless given."""
    data: dict[str, Any] = {
        "mqtt": {"url": broker_url, "base_topic": base, "client_id": f"bridge-{base}"},
        "ivh": {"enabled": False},
        "desk": {"enabled": False},
        "bridge": {"health_interval": 1.0, "shutdown_timeout": 3.0},
    }
    for name, values in sections.items():
        data[name] = {**data.get(name, {}), **values}
    settings = Settings(**data)
    leaks.watch().secret(*settings.secrets())
    return settings


@contextlib.asynccontextmanager
async def running(settings: Settings, *, connected: bool = True) -> AsyncIterator[App]:
    """Run an App in this event loop until the block ends, then shut it down cleanly."""
    app = App(settings)
    stop = asyncio.Event()
    task = asyncio.create_task(app.run(stop), name="test-bridge")
    try:
        if connected:
            async with asyncio.timeout(10):
                await app.link.connected.wait()
        yield app
    finally:
        stop.set()
        async with asyncio.timeout(15):
            await task


class BridgeProcess:
    """`python -m bridge run` as a child process, configured by environment variables."""

    def __init__(self, env: Mapping[str, str], workdir: Path) -> None:
        self.env = {**os.environ, **env, "PYTHONUNBUFFERED": "1"}
        self.log_path = workdir / f"bridge-{uuid.uuid4().hex[:6]}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        leaks.watch().secret(*(v for k, v in env.items() if _is_secret_key(k)))
        leaks.watch().secret_in_urls(*env.values())
        leaks.watch().source("bridge process", lambda: [("log", self.log())])

    def start(self) -> None:
        """Start the process, logging to a file."""
        with self.log_path.open("wb") as log:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "bridge", "run"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
            )

    def signal(self, sig: signal.Signals) -> None:
        """Send a signal."""
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 15.0) -> int:
        """Wait for exit; the exit code."""
        assert self.proc is not None
        return self.proc.wait(timeout)

    def log(self) -> str:
        """Everything the process printed."""
        if not self.log_path.exists():
            return ""
        return self.log_path.read_text(errors="replace")

    @property
    def pid(self) -> int:
        """The process id."""
        assert self.proc is not None
        return self.proc.pid

    def stop(self) -> None:
        """Kill it if still running."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _is_secret_key(name: str) -> bool:
    upper = name.upper()
    return upper.endswith(("__PASSWORD", "__ACCESS_TOKEN", "__SECRET_KEY", "DESK__CALLBACK"))


def mqtt_env(broker: Broker, base: str, **extra: str) -> dict[str, str]:
    """Environment variables for a bridge process on `broker` under `base`."""
    env = {
        "TENCENT2MQTT_MQTT__URL": broker.url,
        "TENCENT2MQTT_MQTT__BASE_TOPIC": base,
        "TENCENT2MQTT_MQTT__CLIENT_ID": f"bridge-{base}",
        "TENCENT2MQTT_MQTT__KEEPALIVE": "5",
        "TENCENT2MQTT_MQTT__RECONNECT_MAX_DELAY": "0.5",
        "TENCENT2MQTT_BRIDGE__HEALTH_INTERVAL": "1",
        "TENCENT2MQTT_IVH__ENABLED": "false",
        "TENCENT2MQTT_DESK__ENABLED": "false",
    }
    env.update({f"TENCENT2MQTT_{k.upper()}": v for k, v in extra.items()})
    return env
