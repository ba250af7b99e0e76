"""Process faults (docs/reliability.md): SIGKILL mid-stream then a restart, and SIGTERM under load.
The bridge runs as a real child process here: signals are the point."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

from bridge.emulator import Emulator
from tests.reliability.conftest import calls, emulator_env, until
from tests.support import figures
from tests.support.bridge import BridgeProcess, mqtt_env
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator
from tests.support.mqtt_probe import Probe


def _env(broker: Broker, base: str, emu_env: dict[str, str], tmp_path: Path) -> dict[str, str]:
    """Both services on; the Desk secret key comes from a `*_FILE` (a Docker secret)."""
    env = {**mqtt_env(broker, base), **emu_env}
    env["TENCENT2MQTT_IVH__ENABLED"] = env["TENCENT2MQTT_DESK__ENABLED"] = "true"
    secret = tmp_path / "desk_secret_key"
    secret.write_text(env.pop("TENCENT2MQTT_DESK__SECRET_KEY") + "\n")
    env["TENCENT2MQTT_DESK__SECRET_KEY_FILE"] = str(secret)
    return env


async def test_sigkill_mid_stream_then_restart(broker: Broker, base: str, tmp_path: Path) -> None:
    async with emulator() as emu, Admin(emu) as admin:
        env = _env(broker, base, emulator_env(emu), tmp_path)
        desk_sid = await admin.desk_session(state="agent", agent_id="a7")
        env["TENCENT2MQTT_DESK__WATCH"] = f'["{desk_sid}"]'  # watched from the configuration
        first, second = BridgeProcess(env, tmp_path), BridgeProcess(env, tmp_path)
        try:
            async with Probe(broker.port, base) as probe:
                first.start()
                await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
                ivh_sid = await _started(probe)
                await probe.wait_json(f"desk/{desk_sid}/state", lambda s: s["state"] == "agent")
                for i in range(50):  # an open Desk message, mid-stream
                    await probe.publish(f"desk/{desk_sid}/stream", f"part{i} ".encode())
                await until(lambda: _streamed(emu, desk_sid) >= 1, 10, "the stream to start")
                first.signal(signal.SIGKILL)
                figures.add("faults_injected")
                figures.add("bridge_sigkills")
                will = await probe.wait_json("bridge/state", lambda s: s["state"] == "offline", 15)
                assert will == {"state": "offline", "reason": "connection_lost"}
                await until(lambda: not emu.state.channels, 10, "the dead bridge's socket to go")
                mark = len(probe.messages)
                second.start()
                await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
                await probe.wait_for(
                    lambda m: (
                        m.topic == f"{base}/ivh/{ivh_sid}/channel"
                        and m.json()["state"] == "connected"
                    ),
                    15,
                    start=mark,
                )
                assert list(emu.state.channels) == [ivh_sid], "a half-open channel is left"
                state = (
                    await probe.wait_for(
                        lambda m: m.topic == f"{base}/ivh/{ivh_sid}/state", 5, mark
                    )
                ).json()
                desk = (
                    await probe.wait_for(
                        lambda m: m.topic == f"{base}/desk/{desk_sid}/state", 5, mark
                    )
                ).json()
                done = await probe.request(
                    "desk/send_stream", {"session_id": desk_sid, "chunk": "new", "finish": True}
                )
                assert done["status"] == "ok", done
                health = await probe.request("bridge/health_check")
        finally:
            first.stop()
            second.stop()
    assert state["status"] == "in_progress"  # re-asserted by the new process
    assert desk["state"] == "agent"
    assert health["data"]["ivh"]["open_channels"] == 1
    messages = await _messages(emu, desk_sid)
    assert messages[-1] == "new"  # the restarted bridge starts a fresh message


def _streamed(emu: Emulator, sid: str) -> int:
    return len(emu.state.desk.live[sid].messages)


async def _messages(emu: Emulator, sid: str) -> list[str]:
    return ["".join(m.chunks) for m in emu.state.desk.live[sid].messages]


async def _started(probe: Probe) -> str:
    body = {"virtualman_project_id": "p", "user_id": "k1", "protocol": "webrtc", "driver_type": 1}
    created = await probe.request("ivh/create_session", body)
    assert created["status"] == "ok", created
    sid = str(created["data"]["session_id"])
    await probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
    assert (await probe.request("ivh/start_session", {"session_id": sid}))["status"] == "ok"
    await probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected")
    return sid


async def test_sigterm_under_load_finishes_inflight_and_exits_0(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    n = 30
    async with emulator() as emu, Admin(emu) as admin:
        env = _env(broker, base, emulator_env(emu), tmp_path)
        env["TENCENT2MQTT_IVH__ENABLED"] = "false"
        sid = await admin.desk_session(state="chatbot")
        proc = BridgeProcess(env, tmp_path)
        try:
            async with Probe(broker.port, base) as probe:
                proc.start()
                await probe.wait_json("bridge/state", lambda s: s["state"] == "online", 15)
                await admin.fault("get_session_state", n, latency_ms=700)
                for i in range(n):
                    body = {"session_id": sid, "transaction": i}
                    await probe.publish("bridge/request/desk/get_session_state", body)
                await until(lambda: not emu.state.faults.list(), 10, "all calls in flight")
                proc.signal(signal.SIGTERM)
                figures.add("faults_injected", n + 1)
                code = await asyncio.to_thread(proc.wait, 20)
                await probe.wait_json("bridge/state", lambda s: s["state"] == "offline")
                replies = probe.on("bridge/response/desk/get_session_state")
                last_state = probe.on("bridge/state")[-1]
        finally:
            proc.stop()
        executed = await calls(admin, "get_session_state")
    assert code == 0, proc.log()
    assert last_state == {"state": "offline", "reason": "shutdown"}
    assert sorted(r["transaction"] for r in replies) == list(range(n))
    assert all(r["status"] == "ok" for r in replies), replies
    assert len(executed) == n
    figures.add("inflight_finished_on_sigterm", len(replies))
