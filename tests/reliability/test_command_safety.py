"""Command safety (docs/topics.md, docs/reliability.md): a request whose deadline passed is
`expired` and calls nothing;
a QoS 1 redelivery of the same request (same transaction or correlation data, same payload,
within the window) runs once and is answered with the first run's response."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from tests.reliability.conftest import calls, kill_while_subscribed, persistent_env, until
from tests.support import figures
from tests.support.bridge import BridgeProcess, running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe, response_properties
from tests.support.world import World

GET = "bridge/request/desk/get_session_state"


@pytest.fixture
async def one_slot(broker: Broker, base: str) -> AsyncIterator[World]:
    """Desk only, one action at a time: a message waits in the bridge while another runs."""
    async with emulator() as emu, Admin(emu) as admin:
        sections = upstream_sections(emu, ivh={"enabled": False})
        settings = settings_for(broker.url, base, bridge={"max_inflight": 1}, **sections)
        async with running(settings) as app, Probe(broker.port, base) as probe:
            yield World(app, emu, admin, probe)


def _expiry(seconds: int) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    props.MessageExpiryInterval = seconds
    return props


async def test_expires_at_in_the_past_calls_nothing(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    for when in (1, "2020-01-01T00:00:00Z", 1_000_000_000.5):
        reply = await w.probe.request(
            GET.split("request/")[1], {"session_id": sid, "expires_at": when}
        )
        assert reply["error"]["code"] == "expired" and reply["session_id"] == sid
    ok = await w.probe.request(GET.split("request/")[1], {"session_id": sid, "expires_at": 4e9})
    assert ok["status"] == "ok"
    figures.add("expired_refused", 3)
    assert len(await calls(w.admin, "get_session_state")) == 1  # only the live one ran


async def test_mqtt5_message_expiry_passed_inside_the_bridge(one_slot: World) -> None:
    w = one_slot
    sid = await w.admin.desk_session()
    await w.admin.fault("get_session_state", 1, latency_ms=2000)
    figures.add("faults_injected")
    await w.probe.publish(GET, {"session_id": sid, "transaction": "slow"})
    await w.probe.publish(GET, {"session_id": sid, "transaction": "late"}, properties=_expiry(1))
    await until(lambda: len(w.probe.on("bridge/response/desk/get_session_state")) == 2, 10)
    replies = {r["transaction"]: r for r in w.probe.on("bridge/response/desk/get_session_state")}
    assert replies["slow"]["status"] == "ok"
    assert replies["late"]["error"]["code"] == "expired"
    figures.add("expired_refused")
    assert len(await calls(w.admin, "get_session_state")) == 1


async def test_past_ten_waiting_per_slot_commands_are_refused_busy(one_slot: World) -> None:
    """One action slot, so the link holds 10 commands for it; the rest are answered at once
    with a retryable `rate_limited`, transaction echoed, and never run."""
    w = one_slot
    sid = await w.admin.desk_session()
    await w.admin.fault("get_session_state", 1, latency_ms=1500)
    figures.add("faults_injected")
    for n in range(14):
        await w.probe.publish(GET, {"session_id": sid, "transaction": n})
    await until(lambda: len(w.probe.on("bridge/response/desk/get_session_state")) == 14, 20)
    replies = {r["transaction"]: r for r in w.probe.on("bridge/response/desk/get_session_state")}
    refused = sorted(n for n, r in replies.items() if r["status"] == "error")
    assert refused == [11, 12, 13]  # 0 runs, 1-10 wait for its slot
    error = replies[13]["error"]
    assert (error["code"], error["retryable"]) == ("rate_limited", True)
    assert replies[13]["session_id"] == sid
    assert len(await calls(w.admin, "get_session_state")) == 11


async def test_expired_while_the_bridge_was_down_never_runs(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    """The broker drops a queued command whose Message Expiry ran out: it never executes."""
    async with emulator() as emu, Admin(emu) as admin:
        sid = await admin.desk_session()
        env = persistent_env(broker, base, emu)
        first, second = BridgeProcess(env, tmp_path), BridgeProcess(env, tmp_path)
        try:
            async with Probe(broker.port, base) as probe:
                await kill_while_subscribed(probe, first)
                body = {"session_id": sid, "transaction": "stale"}
                await probe.publish(GET, body, properties=_expiry(1))
                await probe.publish(GET, {"session_id": sid, "transaction": "fresh"})
                # mosquitto counts whole seconds: 2.1 s is past a 1 s expiry however it rounds
                await asyncio.sleep(2.1)
                second.start()
                reply = await probe.wait_json("bridge/response/desk/get_session_state", timeout=15)
                await asyncio.sleep(0.3)
                replies = probe.on("bridge/response/desk/get_session_state")
        finally:
            first.stop()
            second.stop()
        executed = await calls(admin, "get_session_state")
    assert reply["transaction"] == "fresh" and len(replies) == 1
    assert len(executed) == 1
    figures.add("expired_refused")


async def test_redelivery_with_the_same_transaction_runs_once(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    body = {"session_id": sid, "transaction": "tx-1"}
    await w.admin.fault("get_session_state", 1, latency_ms=300)  # the copy arrives mid-call
    for _ in range(3):
        await w.probe.publish(GET, body)
    await until(lambda: len(w.probe.on("bridge/response/desk/get_session_state")) == 3, 10)
    await w.probe.publish(GET, body)  # and once more after it finished
    await until(lambda: len(w.probe.on("bridge/response/desk/get_session_state")) == 4, 10)
    replies = w.probe.on("bridge/response/desk/get_session_state")
    figures.add("redeliveries_sent", 3)
    assert all(r["status"] == "ok" and r["transaction"] == "tx-1" for r in replies)
    assert sum(1 for r in replies if r.get("duplicate")) == 3
    assert len({r["data"]["state"] for r in replies}) == 1
    executed = await calls(w.admin, "get_session_state")
    figures.add("redeliveries_run_twice", len(executed) - 1)
    assert len(executed) == 1


async def test_redelivery_with_the_same_correlation_data_runs_once(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    reply_to = f"{w.probe.base}/replies/kiosk"
    for corr in (b"c-1", b"c-1", b"c-2"):
        props = response_properties(reply_to, corr)
        await w.probe.publish(GET, {"session_id": sid}, properties=props)
    await until(lambda: len(w.probe.on("replies/kiosk")) == 3, 10)
    figures.add("redeliveries_sent")
    answers = [m for m in w.probe.messages if m.topic == reply_to]
    assert sorted(m.correlation_data or b"" for m in answers) == [b"c-1", b"c-1", b"c-2"]
    assert len(await calls(w.admin, "get_session_state")) == 2  # c-2 is a new request
