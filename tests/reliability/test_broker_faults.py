"""Broker faults (docs/reliability.md): the broker killed mid-traffic, and QoS 1 commands that wait
in
a persistent MQTT session while the bridge is down."""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections import Counter
from pathlib import Path

from tests.reliability.conftest import calls, kill_while_subscribed, persistent_env, until
from tests.support import figures
from tests.support.bridge import BridgeProcess, running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe

RESTARTS = 3


async def _traffic(probe: Probe, sent: list[int]) -> None:
    """Health checks as fast as the broker takes them, until the broker dies."""
    with contextlib.suppress(Exception):
        while True:
            await probe.publish("bridge/request/bridge/health_check", {"transaction": len(sent)})
            sent.append(1)
            await asyncio.sleep(0.005)


async def test_broker_killed_mid_traffic_three_times(own_broker: Broker, base: str) -> None:
    async with emulator() as emu, Admin(emu) as admin:
        sid = await admin.desk_session(state="chatbot")
        sections = upstream_sections(emu, ivh={"enabled": False})
        settings = settings_for(own_broker.url, base, mqtt={"reconnect_max_delay": 0.5}, **sections)
        async with running(settings) as app:
            async with Probe(own_broker.port, base) as probe:
                watched = await probe.request("desk/watch", {"session_id": sid})
                assert watched["status"] == "ok", watched
                await probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "chatbot")
            for round_ in range(RESTARTS):
                await _kill_mid_traffic(own_broker, base, app.link.connected)
                back = time.monotonic()
                own_broker.start()
                await until(app.link.connected.is_set, 10, "the bridge to reconnect")
                took = time.monotonic() - back
                figures.add("faults_injected")
                figures.add("broker_restarts")
                assert took < 3.0, f"reconnected {took:.2f}s after the broker came back"
                await _check_reasserted(own_broker, base, sid, round_ + 1)


async def _kill_mid_traffic(broker: Broker, base: str, connected: asyncio.Event) -> None:
    sent: list[int] = []
    async with Probe(broker.port, base) as probe:
        task = asyncio.create_task(_traffic(probe, sent))
        await until(lambda: len(sent) >= 20, 5, "traffic to flow")
        broker.kill()
        await until(lambda: not connected.is_set(), 10, "the bridge to notice")
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def _check_reasserted(broker: Broker, base: str, sid: str, restarts: int) -> None:
    """The broker forgot everything: retained state must come back, subscriptions work."""
    async with Probe(broker.port, base) as probe:
        state = await probe.wait_json("bridge/state")
        info = await probe.wait_json("bridge/info")
        desk = await probe.wait_json(f"desk/{sid}/state")
        reply = await probe.request("bridge/health_check")
        got = await probe.request("desk/get_session_state", {"session_id": sid})
    assert state == {"state": "online"}
    assert info["base_topic"] == base
    assert desk["state"] == "chatbot"
    assert reply["status"] == "ok" and reply["data"]["mqtt"]["reconnects"] == restarts
    assert got["status"] == "ok", got


async def test_qos1_commands_queued_while_bridge_is_down_run_once(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    """SIGKILL the bridge; the broker keeps its persistent session and queues N commands."""
    n = 200
    async with emulator() as emu, Admin(emu) as admin:
        sid = await admin.desk_session(state="agent", agent_id="a1")
        env = persistent_env(broker, base, emu)
        first, second = BridgeProcess(env, tmp_path), BridgeProcess(env, tmp_path)
        try:
            async with Probe(broker.port, base) as probe:
                await kill_while_subscribed(probe, first)
                figures.add("faults_injected")
                for i in range(n):
                    body = {"session_id": sid, "transaction": i}
                    await probe.publish("bridge/request/desk/get_session_state", body, qos=1)
                figures.add("queued_commands_sent", n)
                assert not await calls(admin, "get_session_state")  # nobody ran them yet
                second.start()
                await until(lambda: _answered(probe) >= n, 30, f"{n} answers")
                await asyncio.sleep(0.3)  # a duplicate would arrive now
                answers = _transactions(probe)
            executed = await calls(admin, "get_session_state")
        finally:
            first.stop()
            second.stop()
    counts = Counter(answers)
    figures.add("queued_commands_executed", len(executed))
    figures.add("queued_commands_lost", n - len(counts))
    figures.add("queued_commands_run_twice", sum(1 for c in counts.values() if c > 1))
    assert sorted(counts) == list(range(n)), "a command was lost"
    assert max(counts.values()) == 1, "a command was answered twice"
    assert len(executed) == n, f"{len(executed)} API calls for {n} commands"


def _transactions(probe: Probe) -> list[int]:
    return [r["transaction"] for r in probe.on("bridge/response/desk/get_session_state")]


def _answered(probe: Probe) -> int:
    ok = [r for r in probe.on("bridge/response/desk/get_session_state") if r["status"] == "ok"]
    return len(ok)


async def test_a_hung_broker_leaves_no_socket_behind(base: str) -> None:
    """A broker that accepts TCP and never sends CONNACK: stopping the bridge mid-connect
    closes the socket (aiomqtt alone leaves it open until garbage collection)."""
    accepted: asyncio.Queue[asyncio.StreamReader] = asyncio.Queue()
    writers: list[asyncio.StreamWriter] = []

    async def hang(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        writers.append(writer)
        await accepted.put(reader)

    server = await asyncio.start_server(hang, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    try:
        settings = settings_for(f"mqtt://127.0.0.1:{port}", base)
        async with running(settings, connected=False) as app:
            reader = await asyncio.wait_for(accepted.get(), 10)
            assert await asyncio.wait_for(reader.read(4096), 10)  # CONNECT: now it waits
            assert not app.link.connected.is_set()
        figures.add("faults_injected")
        async with asyncio.timeout(5):
            while await reader.read(4096):  # EOF once the bridge closed its socket
                pass
        figures.add("socket_and_task_leak_checks")
    finally:
        for writer in writers:
            writer.close()
        server.close()
        await server.wait_closed()


async def test_queued_commands_survive_a_broker_kill_with_persistence(
    tmp_path: Path, base: str
) -> None:
    """mosquitto with persistence: the bridge's session and the QoS 1 commands queued for it
    survive SIGKILL of the broker (once saved), and all run once when the bridge is back."""
    n = 100
    store = tmp_path / "store"
    store.mkdir()
    run_as = "user root\n" if os.geteuid() == 0 else ""  # the store is in pytest's private tmp
    extra = (
        f"{run_as}persistence true\npersistence_location {store}/\n"
        "autosave_on_changes true\nautosave_interval 1\n"
    )
    broker = Broker(tmp_path, extra=extra)
    broker.start()
    try:
        async with emulator() as emu, Admin(emu) as admin:
            sid = await admin.desk_session(state="queuing")
            sections = upstream_sections(emu, ivh={"enabled": False})
            mqtt = {"clean_start": False, "session_expiry": 300, "reconnect_max_delay": 0.5}
            settings = settings_for(broker.url, base, mqtt=mqtt, **sections)
            async with running(settings):  # the bridge subscribes: its session is saved
                pass
            await _saved(broker, base)
            broker.kill()  # the bridge is gone too: nobody to deliver to
            broker.start()
            async with Probe(broker.port, base) as probe:
                for i in range(n):
                    body = {"session_id": sid, "transaction": i}
                    await probe.publish("bridge/request/desk/get_session_state", body, qos=1)
            await _saved(broker, base)
            broker.kill()
            figures.add("faults_injected", 2)
            figures.add("broker_restarts", 2)
            broker.start()
            async with Probe(broker.port, base) as probe, running(settings):
                await until(lambda: _answered(probe) >= n, 30, f"{n} answers")
                await asyncio.sleep(0.3)
                answers = _transactions(probe)
            executed = await calls(admin, "get_session_state")
    finally:
        broker.kill()
    figures.add("persisted_commands_sent", n)
    figures.add("persisted_commands_executed", len(executed))
    assert sorted(answers) == list(range(n)), "a command was lost or answered twice"
    assert len(executed) == n


def _saves(broker: Broker) -> int:
    return broker.log.read_text(errors="replace").count("Saving in-memory database")


async def _saved(broker: Broker, base: str) -> None:
    """Wait until everything the broker holds now is on disk: after a retained marker (a change,
    so a save follows it), a save must begin (mosquitto is single-threaded)."""
    before = _saves(broker)
    async with Probe(broker.port, base) as probe:
        await probe.publish("test/marker", str(before).encode(), retain=True)
    await until(lambda: _saves(broker) > before, 10, "mosquitto to save its database")
