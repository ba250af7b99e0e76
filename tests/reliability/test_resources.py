"""Resource bounds (docs/topics.md, docs/reliability.md): queues are bounded and report their depth
on
`bridge/health`; memory stays flat over a 10,000-command soak of a bridge process."""

from __future__ import annotations

import asyncio
import socket
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import aiomqtt

from tests.reliability.conftest import until
from tests.support import figures
from tests.support.bridge import BridgeProcess, mqtt_env, running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe

WARMUP, SOAK = 2_000, 10_000
OUTSTANDING = 300  # requests a client keeps in flight, like a busy fleet of kiosks
MAX_GROWTH_KB = 10 * 1024


async def test_queues_are_bounded_and_reported(broker: Broker, base: str) -> None:
    async with emulator() as emu, Admin(emu) as admin:
        sections = upstream_sections(emu, ivh={"enabled": False}, desk={"stream_queue_size": 10})
        async with (
            running(settings_for(broker.url, base, **sections)) as app,
            Probe(broker.port, base) as probe,
        ):
            sid = await admin.desk_session()
            await admin.fault("send_stream_msg", 1, latency_ms=500)
            figures.add("faults_injected")
            for i in range(40):  # one call in flight, 10 may wait: the rest are refused
                await probe.publish(f"desk/{sid}/stream", f"c{i}".encode())
            health = await probe.request("bridge/health_check")
            await until(lambda: len(_errors(probe)) >= 29, 10, "the overflow to be refused")
            desk = app.features[0]
            await until(lambda: desk.status()["stream_queue_depth"] == 0, 10, "the queue to drain")
            await probe.publish(f"desk/{sid}/stream", {"chunk": "", "finish": True})
            done = await probe.wait_json(
                "bridge/response/desk/send_stream", lambda r: r["status"] == "ok", 10
            )
            retained = await probe.wait_json("bridge/health")
    data = health["data"]
    assert 0 < data["desk"]["stream_queue_depth"] <= 10
    for key in ("outbox_depth", "dropped"):
        assert key in data["mqtt"] and key in retained["mqtt"]
    assert "actions_inflight" in data and "stream_queue_depth" in retained["desk"]
    errors = _errors(probe)
    assert {e["error"]["code"] for e in errors} == {"rate_limited"}
    assert all(e["error"]["retryable"] for e in errors)
    assert done["data"]["chunks"] + len(errors) == 41  # every chunk sent or refused, none lost
    figures.add("queue_overflows_refused", len(errors))


def _errors(probe: Probe) -> list[dict[str, Any]]:
    replies = probe.on("bridge/response/desk/send_stream")
    return [r for r in replies if r["status"] == "error"]


def _caught_up(seen: dict[str, int], target: int) -> Callable[[], bool]:
    return lambda: seen["answers"] >= target


def rss_kb(pid: int) -> int:
    """Resident set size of a process, from /proc."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def _burst(
    client: aiomqtt.Client, base: str, start: int, count: int, seen: dict[str, int]
) -> None:
    topic = f"{base}/bridge/request/bridge/health_check"
    for first in range(start, start + count, 200):
        last = min(first + 200, start + count)
        await asyncio.gather(
            *[client.publish(topic, f'{{"transaction":{i}}}', qos=1) for i in range(first, last)]
        )
        await until(_caught_up(seen, last - OUTSTANDING + 200), 30, "answers")


async def test_memory_stays_flat_over_a_10000_command_soak(
    broker: Broker, base: str, tmp_path: Path
) -> None:
    # Every request carries a transaction, so each is remembered for the redelivery window
    # (about 1 kB each): a 2 s window turns over during the warm-up, so what is measured after
    # it is growth, not the window filling (60 s by default: 10,000 requests fill ~10 MB).
    env = mqtt_env(broker, base, BRIDGE__DEDUP_WINDOW="2")
    proc = BridgeProcess(env, tmp_path)
    seen: dict[str, int] = {"answers": 0, "online": 0}

    async def count(client: aiomqtt.Client) -> None:
        async for message in client.messages:
            if message.topic.value.endswith("/bridge/state"):
                seen["online"] += b"online" in bytes(message.payload)
            else:
                seen["answers"] += 1

    client = aiomqtt.Client(
        "127.0.0.1",
        broker.port,
        identifier=f"soak-{uuid.uuid4().hex[:6]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=[(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)],
    )
    try:
        async with client:
            await client.subscribe(f"{base}/bridge/state", qos=1)
            await client.subscribe(f"{base}/bridge/response/#", qos=0)
            counter = asyncio.create_task(count(client))
            try:
                proc.start()
                await until(lambda: seen["online"] > 0, 15, "the bridge to be online")
                await _burst(client, base, 0, WARMUP, seen)
                await until(lambda: seen["answers"] >= WARMUP, 30, "the warm-up")
                before = rss_kb(proc.pid)
                await _burst(client, base, WARMUP, SOAK, seen)
                await until(lambda: seen["answers"] >= WARMUP + SOAK, 60, "the soak")
                after = rss_kb(proc.pid)
            finally:
                counter.cancel()
                await asyncio.gather(counter, return_exceptions=True)
        async with Probe(broker.port, base) as probe:
            health = await probe.request("bridge/health_check")
    finally:
        proc.stop()
    growth = after - before
    figures.add("soak_commands", SOAK + WARMUP)
    figures.add("soak_rss_growth_kb", growth)
    assert seen["answers"] == WARMUP + SOAK
    assert health["data"]["mqtt"]["outbox_depth"] < 100 and health["data"]["mqtt"]["dropped"] == 0
    assert growth < MAX_GROWTH_KB, f"RSS grew {growth} kB over {SOAK} commands"
