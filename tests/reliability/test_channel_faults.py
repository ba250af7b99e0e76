"""Command-channel faults (docs/design.md): sockets dropped again and again, the cloud refusing
reconnects for a while, the session closed while reconnecting. The channel recovers or stops as
the SPEC says, publishes no event twice, and leaves no task or socket behind."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.reliability.conftest import until
from tests.support import figures
from tests.support.bridge import running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe
from tests.support.world import World

CHANNEL = "commandchannel"
DROPS = 6


@pytest.fixture
async def ivh(broker: Broker, base: str) -> AsyncIterator[World]:
    """IVH only, with a channel that reconnects fast."""
    async with emulator() as emu, Admin(emu) as admin:
        channel = {"url": emu.ws_url, "heartbeat_interval": 5.0, "reconnect_max_delay": 0.3}
        sections = upstream_sections(emu, ivh={"channel": channel}, desk={"enabled": False})
        async with (
            running(settings_for(broker.url, base, **sections)) as app,
            Probe(broker.port, base) as probe,
        ):
            yield World(app, emu, admin, probe)


async def started_session(w: World, user: str) -> str:
    """A created, started, in-progress session with its channel connected."""
    body = {"virtualman_project_id": "p", "user_id": user, "protocol": "webrtc", "driver_type": 1}
    created = await w.probe.request("ivh/create_session", body)
    sid = str(created["data"]["session_id"])
    await w.probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
    assert (await w.probe.request("ivh/start_session", {"session_id": sid}))["status"] == "ok"
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected")
    return sid


def channel_tasks(sid: str) -> list[asyncio.Task[Any]]:
    """The live reader/writer/heartbeat tasks of one session's channel."""
    return [t for t in asyncio.all_tasks() if t.get_name().endswith(f":{sid}") and not t.done()]


def speak_keys(w: World, sid: str) -> list[tuple[Any, ...]]:
    events = [e for e in w.probe.on(f"ivh/{sid}/event") if e["type"] == "speak_status"]
    return [(e["data"]["req_id"], e["data"]["speak_status"], e["data"].get("seq")) for e in events]


async def say(w: World, sid: str, text: str) -> None:
    """A drive, and its speech to the end (TextOver)."""
    body = {"session_id": sid, "text": text, "chat_command": "NotUseChat"}
    reply = await w.probe.request("ivh/send_text", body, timeout=10)
    assert reply["status"] == "ok", reply
    req = reply["data"]["req_id"]
    await w.probe.wait_json(
        f"ivh/{sid}/event",
        lambda e: e["data"].get("req_id") == req and e["data"].get("speak_status") == "TextOver",
    )


def sockets(w: World) -> list[str]:
    return list(w.emu.state.channels)


async def test_dropped_again_and_again(ivh: World) -> None:
    w = ivh
    sid = await started_session(w, "drops")
    for i in range(DROPS):
        await say(w, sid, f"before drop {i}")
        connects = len(_opens(await w.admin.journal(CHANNEL)))
        await w.admin.drop(sid)
        figures.add("faults_injected")
        figures.add("channel_drops")
        await until(lambda: not w.app.features[0].status()["open_channels"], 5, "the drop")
        await until(lambda: w.app.features[0].status()["open_channels"] == 1, 10, "reconnect")
        assert len(_opens(await w.admin.journal(CHANNEL))) == connects + 1
    await say(w, sid, "after the drops")
    await asyncio.sleep(0.5)  # replays of the last drive's frames would arrive now
    keys = speak_keys(w, sid)
    figures.add("channel_duplicate_events", len(keys) - len(set(keys)))
    assert len(keys) == len(set(keys)), "a speak-status frame was published twice"
    assert sockets(w) == [sid]
    assert len(channel_tasks(sid)) == 4  # the run loop + reader, writer, heartbeat
    figures.add("socket_and_task_leak_checks")


def _opens(journal: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in journal if e.get("kind") == "ws_open" and e.get("status") == 101]


async def test_cloud_refuses_reconnects_for_a_while(ivh: World) -> None:
    w = ivh
    sid = await started_session(w, "refused")
    refusals = 4
    await w.admin.fault(CHANNEL, refusals, http_status=503)
    await w.admin.drop(sid)
    figures.add("faults_injected", refusals + 1)
    state = await w.probe.wait_json(
        f"ivh/{sid}/channel", lambda c: c["state"] == "reconnecting" and c["attempt"] >= refusals
    )
    assert "503" in (state["reason"] or "")
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected", 10)
    await say(w, sid, "back again")
    assert sockets(w) == [sid]
    assert len(channel_tasks(sid)) == 4
    figures.add("socket_and_task_leak_checks")


async def test_session_closed_while_reconnecting(ivh: World) -> None:
    w = ivh
    sid = await started_session(w, "closing")
    await w.admin.fault(CHANNEL, 1000, http_status=503)
    await w.admin.drop(sid)
    figures.add("faults_injected")
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "reconnecting")
    await w.admin.set_ivh_status(sid, 2)
    closed = await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "closed", 10)
    assert closed["reason"]
    await until(lambda: not channel_tasks(sid), 5, "the channel's tasks to end")
    tried = len(await w.admin.journal(CHANNEL))
    await asyncio.sleep(1.0)  # a channel still reconnecting would try again within 0.5 s
    assert len(await w.admin.journal(CHANNEL)) == tried, "reconnected to a closed session"
    assert not sockets(w)
    states = [c["state"] for c in w.probe.on(f"ivh/{sid}/channel")]
    assert states[-1] == "closed" and "connected" not in states[states.index("reconnecting") :]
    late = await w.probe.request("ivh/send_text", {"session_id": sid, "text": "hi"})
    assert late["error"]["code"] == "session_closed"
    figures.add("socket_and_task_leak_checks")


async def test_refusals_and_the_recovery_are_each_logged_once(
    ivh: World, caplog: pytest.LogCaptureFixture
) -> None:
    w = ivh
    caplog.set_level(logging.INFO)
    sid = await started_session(w, "said-once")
    await w.admin.fault(CHANNEL, 4, http_status=409)
    await w.admin.drop(sid)
    await w.probe.wait_json(
        f"ivh/{sid}/channel", lambda c: c["state"] == "reconnecting" and c["attempt"] >= 4
    )
    start = len(w.probe.messages)
    topic = f"{w.probe.base}/ivh/{sid}/channel"
    await w.probe.wait_for(
        lambda m: m.topic == topic and m.json()["state"] == "connected", 10, start
    )
    said = [r.getMessage() for r in caplog.records if r.getMessage().startswith("ivh channel")]
    assert [m for m in said if "refused: HTTP 409" in m and "recovered" not in m] == [
        f"ivh channel {sid}: refused: HTTP 409"
    ], said
    recovered = [m for m in said if "recovered after" in m]
    assert len(recovered) == 1 and recovered[0].endswith("(was refused: HTTP 409)"), said
