"""Shared pieces of the reliability suite (issue 7): a world of emulator + bridge + probe,
bounded waits, subprocess environments, and the figures written to `.reliability/summary.json`."""

from __future__ import annotations

import asyncio
import json
import signal
import time
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from bridge.emulator import Emulator
from tests.support import figures
from tests.support.bridge import BridgeProcess, mqtt_env
from tests.support.broker import Broker
from tests.support.cloud import Admin
from tests.support.mqtt_probe import Probe
from tests.support.world import World, world_of

SUMMARY = Path(__file__).resolve().parents[2] / ".reliability" / "summary.json"


@pytest.fixture(scope="session", autouse=True)
def write_figures() -> Iterator[None]:
    """Write the suite's figures when the session ends."""
    figures.COUNTS.clear()
    started = time.monotonic()
    yield
    SUMMARY.parent.mkdir(exist_ok=True)
    body: dict[str, float] = dict(sorted(figures.COUNTS.items()))
    body["duration_s"] = round(time.monotonic() - started, 1)
    SUMMARY.write_text(json.dumps(body, indent=2) + "\n")


@pytest.fixture
async def world(broker: Broker, base: str) -> AsyncIterator[World]:
    """Both services against the emulator, on the shared broker."""
    async with world_of(broker, base) as w:
        yield w


async def until(check: Callable[[], bool], timeout: float = 10.0, what: str = "") -> None:
    """Wait (bounded) until `check()` holds, polling every 20 ms."""
    try:
        async with asyncio.timeout(timeout):
            while not check():
                await asyncio.sleep(0.02)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout}s waiting for {what or check}") from None


async def calls(admin: Admin, api: str) -> list[dict[str, Any]]:
    """The emulator's HTTP journal entries for one API (e.g. `get_session_state`)."""
    return [e for e in await admin.journal(api) if e.get("kind") == "http"]


def emulator_env(emu: Emulator) -> dict[str, str]:
    """Environment variables pointing a bridge process at the emulator (fast intervals)."""
    cfg = emu.config
    return {
        "TENCENT2MQTT_IVH__BASE_URL": emu.base_url,
        "TENCENT2MQTT_IVH__APPKEY": cfg.appkey,
        "TENCENT2MQTT_IVH__ACCESS_TOKEN": cfg.access_token,
        "TENCENT2MQTT_IVH__POLL_INTERVAL": "0.2",
        "TENCENT2MQTT_IVH__CLOSED_RETENTION": "1",
        "TENCENT2MQTT_IVH__CHANNEL__URL": emu.ws_url,
        "TENCENT2MQTT_IVH__CHANNEL__HEARTBEAT_INTERVAL": "5",
        "TENCENT2MQTT_DESK__BASE_URL": emu.base_url,
        "TENCENT2MQTT_DESK__SDKAPPID": str(cfg.sdkappid),
        "TENCENT2MQTT_DESK__IDENTIFIER": cfg.identifier,
        "TENCENT2MQTT_DESK__SECRET_KEY": cfg.secret_key,
        "TENCENT2MQTT_DESK__POLL_INTERVAL": "0.2",
        "TENCENT2MQTT_DESK__RATE_LIMIT": "1000",
        "TENCENT2MQTT_RETRY__INITIAL_DELAY": "0.02",
        "TENCENT2MQTT_RETRY__MAX_DELAY": "0.1",
    }


def persistent_env(broker: Broker, base: str, emu: Emulator) -> dict[str, str]:
    """A Desk bridge process with a persistent MQTT session (queued QoS 1 commands survive)."""
    return {
        **mqtt_env(broker, base, MQTT__CLEAN_START="false", MQTT__SESSION_EXPIRY="300"),
        **emulator_env(emu),
        "TENCENT2MQTT_DESK__ENABLED": "true",
    }


async def kill_while_subscribed(probe: Probe, bridge: BridgeProcess) -> None:
    """Start `bridge`, see it online, SIGKILL it and see its will: its persistent session now
    queues what is published to it at QoS 1."""
    bridge.start()
    await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
    bridge.signal(signal.SIGKILL)
    await probe.wait_json("bridge/state", lambda s: s["state"] == "offline", 10)
