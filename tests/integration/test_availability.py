"""Availability (docs/topics.md, docs/reliability.md): birth, will, shutdown, reconnect, re-
assert."""

from __future__ import annotations

import asyncio
import logging
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from tests.support.bridge import BridgeProcess, mqtt_env, running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe


async def test_sigterm_publishes_offline_shutdown_and_exits_0(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    proc = BridgeProcess(mqtt_env(broker, base), tmp_path)
    async with Probe(broker.port, base) as probe:
        proc.start()
        try:
            await probe.wait_json("bridge/state", lambda s: s["state"] == "online", timeout=15)
            proc.signal(signal.SIGTERM)
            state = await probe.wait_json("bridge/state", lambda s: s["state"] == "offline")
            code = await asyncio.to_thread(proc.wait)
        finally:
            proc.stop()
    assert state == {"state": "offline", "reason": "shutdown"}
    assert code == 0, proc.log()


async def test_sigkill_fires_the_will(broker: Broker, base: str, tmp_path: Path) -> None:
    proc = BridgeProcess(mqtt_env(broker, base), tmp_path)
    async with Probe(broker.port, base) as probe:
        proc.start()
        try:
            await probe.wait_json("bridge/state", lambda s: s["state"] == "online", timeout=15)
            proc.signal(signal.SIGKILL)
            state = await probe.wait_json("bridge/state", lambda s: s["state"] == "offline")
        finally:
            proc.stop()
    assert state == {"state": "offline", "reason": "connection_lost"}


async def test_state_is_retained_for_late_subscribers(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)):
        await asyncio.sleep(0.3)
        async with Probe(broker.port, base) as probe:
            msg = await probe.wait_for(lambda m: m.topic == f"{base}/bridge/state")
    assert msg.retain and msg.json() == {"state": "online"}


async def test_reconnects_resubscribes_and_reasserts(own_broker: Broker, base: str) -> None:
    settings = settings_for(own_broker.url, base, mqtt={"reconnect_max_delay": 0.5})
    async with running(settings) as app:
        own_broker.restart()  # a killed mosquitto without persistence forgets retained state
        async with asyncio.timeout(10):
            while app.link.reconnects < 2 or not app.link.connected.is_set():
                await asyncio.sleep(0.05)
        async with Probe(own_broker.port, base) as probe:
            state = await probe.wait_json("bridge/state")
            info = await probe.wait_json("bridge/info")
            reply = await probe.request("bridge/health_check")
    assert state == {"state": "online"}
    assert info["base_topic"] == base
    assert reply["status"] == "ok"
    assert reply["data"]["mqtt"]["reconnects"] >= 1


def test_invalid_config_exits_2_naming_the_key(tmp_path: Path) -> None:
    conf = tmp_path / "bad.toml"
    conf.write_text('[mqtt]\nurl = "http://nowhere"\nqos = 7\n[ivh]\npoll_interval = 0\n')
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "run", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "mqtt.url:" in result.stderr
    assert "mqtt.qos:" in result.stderr
    assert "ivh.poll_interval:" in result.stderr


def test_check_config_never_prints_a_secret(tmp_path: Path) -> None:
    conf = tmp_path / "c.toml"
    conf.write_text(
        '[mqtt]\nusername = "bridge"\npassword = "pw-SECRET-1"\n'
        '[ivh]\nappkey = "k"\naccess_token = "tok-SECRET-2"\n'
        '[desk]\nsdkappid = 1400000000\nidentifier = "admin"\n'
    )
    secret_file = tmp_path / "desk_key"
    secret_file.write_text("key-SECRET-3\n")
    env = {"TENCENT2MQTT_DESK__SECRET_KEY_FILE": str(secret_file), "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-m", "bridge", "check-config", "--config", str(conf)],
        capture_output=True,
        text=True,
        timeout=30,
        env=env,
    )
    assert result.returncode == 0, result.stderr
    assert "SECRET" not in result.stdout + result.stderr
    assert 'password = "**********"' in result.stdout
    assert "# desk: enabled" in result.stdout


async def test_birth_says_online_first_and_each_retained_topic_once(
    broker: Broker, base: str
) -> None:
    async with Probe(broker.port, base) as probe:
        async with running(settings_for(broker.url, base)):
            await probe.wait_json("bridge/health")
            await probe.wait_json("bridge/info")
        topics = [m.topic.removeprefix(f"{base}/") for m in probe.messages]
    assert topics[0] == "bridge/state"
    assert probe.on("bridge/state")[0] == {"state": "online"}
    first_health = probe.on("bridge/health")[0]
    assert first_health["mqtt"]["connected"] is True
    assert topics.count("bridge/info") == 1


async def test_shutdown_while_polling_is_quiet(
    broker: Broker, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    """Stopping mid-poll stops the pollers first: no task fails on a closed HTTP client."""
    async with emulator() as emu, Admin(emu) as admin:
        sid = await admin.desk_session()
        sections = upstream_sections(
            emu, ivh={"poll_interval": 0.01}, desk={"poll_interval": 0.01, "watch": [sid]}
        )
        async with running(settings_for(broker.url, base, **sections)) as app:
            async with asyncio.timeout(5):
                while app.features[0].status()["polls"] < 5:
                    await asyncio.sleep(0.01)
    failures = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert failures == [], [r.getMessage() for r in failures]


async def test_an_action_still_running_at_shutdown_is_answered_shutting_down(
    broker: Broker, base: str
) -> None:
    """Every received command gets an answer: one cut short by the shutdown too (retryable)."""
    async with emulator() as emu, Admin(emu) as admin, Probe(broker.port, base) as probe:
        sid = await admin.desk_session()
        sections = upstream_sections(emu, bridge={"shutdown_timeout": 0.5})
        async with running(settings_for(broker.url, base, **sections)) as app:
            await admin.fault("get_session_state", 1, latency_ms=4000)  # a slow upstream
            start = len(probe.messages)
            body = {"session_id": sid, "transaction": "slow"}
            await probe.publish("bridge/request/desk/get_session_state", body)
            async with asyncio.timeout(5):
                while app.dispatcher.inflight == 0:
                    await asyncio.sleep(0.01)
        # the bridge has stopped; the answer was published before it said offline
        topic = f"{base}/bridge/response/desk/get_session_state"
        reply = (await probe.wait_for(lambda m: m.topic == topic, 3, start)).json()
    assert reply["transaction"] == "slow" and reply["status"] == "error"
    assert reply["error"]["code"] == "shutting_down"
    assert reply["error"]["retryable"] is True
