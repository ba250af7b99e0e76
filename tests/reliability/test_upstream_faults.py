"""Upstream faults (docs/design.md, docs/reliability.md): 5xx bursts, timeouts, retryable and final
codes, latency
spikes. Retried faults end in success; final ones fail at once with the right code; one slow
session never blocks another; no Desk stream chunk is lost or sent twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

import pytest

from tests.reliability.conftest import calls, until
from tests.support import figures
from tests.support.bridge import running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe
from tests.support.world import World

TIMEOUT = 0.6  # each upstream call's timeout in this module


@pytest.fixture
async def fast(broker: Broker, base: str) -> AsyncIterator[World]:
    """Both services, with a short upstream timeout."""
    async with emulator() as emu, Admin(emu) as admin:
        sections = upstream_sections(
            emu, ivh={"request_timeout": TIMEOUT}, desk={"request_timeout": TIMEOUT}
        )
        async with (
            running(settings_for(broker.url, base, **sections)) as app,
            Probe(broker.port, base) as probe,
        ):
            yield World(app, emu, admin, probe)


# (fault, count, expected code or "ok", upstream calls made): retry budget is 3 attempts.
DESK_CASES: list[tuple[dict[str, Any], int, str, int | None]] = [
    ({"http_status": 503}, 2, "ok", 3),
    ({"http_status": 500}, 5, "upstream_unavailable", 3),
    ({"error_code": 60007}, 2, "ok", 3),
    ({"error_code": 20005}, 1, "ok", 2),
    ({"error_code": 60018}, 9, "rate_limited", 3),
    ({"error_code": 141004}, 1, "invalid_payload", 1),
    ({"error_code": 70009}, 1, "auth_failed", 1),
    ({"error_code": 141005}, 1, "session_not_found", 1),
    ({"latency_ms": 900}, 1, "ok", 2),
    ({"latency_ms": 900}, 3, "timeout", 3),
    ({"drop": True}, 1, "ok", None),
]
IVH_CASES: list[tuple[dict[str, Any], int, str, int | None]] = [
    ({"http_status": 502}, 2, "ok", 3),
    ({"error_code": -101000}, 2, "ok", 3),
    ({"error_code": 100012}, 1, "ok", 2),
    ({"error_code": 110018}, 1, "session_not_found", 1),
    ({"error_code": 100005}, 1, "auth_failed", 1),
    ({"latency_ms": 900}, 3, "timeout", 3),
]


async def _check(
    w: World, path: str, action: str, sid: str, case: tuple[dict[str, Any], int, str, int | None]
) -> None:
    fault, count, expected, made = case
    before = len(await calls(w.admin, path))
    await w.admin.fault(path, count, **fault)
    reply = await w.probe.request(action, {"session_id": sid}, timeout=15)
    await w.admin.call("DELETE", "/faults")
    figures.add("faults_injected", min(count, made or 1))
    figures.add("upstream_fault_cases")
    if expected == "ok":
        assert reply["status"] == "ok", (case, reply)
    else:
        assert reply["status"] == "error" and reply["error"]["code"] == expected, (case, reply)
        if made == 1:  # final: answered after one call (counted below), with the cloud's code
            upstream = fault.get("error_code")
            assert reply["error"]["upstream_code"] == upstream and not reply["error"]["retryable"]
    if made is not None:  # a delayed answer is journaled when it ends: wait for the last one
        made_now = 0
        async with asyncio.timeout(5):
            while made_now < made:
                made_now = len(await calls(w.admin, path)) - before
                await asyncio.sleep(0.05)
        await asyncio.sleep(0.1)
        assert len(await calls(w.admin, path)) - before == made, case


async def test_desk_faults_retried_or_final(fast: World) -> None:
    sid = await fast.admin.desk_session(state="chatbot")
    for case in DESK_CASES:
        await _check(fast, "get_session_state", "desk/get_session_state", sid, case)


async def test_ivh_faults_retried_or_final(fast: World) -> None:
    created = await fast.probe.request(
        "ivh/create_session",
        {"virtualman_project_id": "p", "user_id": "u1", "protocol": "webrtc", "driver_type": 1},
    )
    assert created["status"] == "ok", created
    sid = created["data"]["session_id"]
    for case in IVH_CASES:
        await _check(fast, "statsession", "ivh/get_session", sid, case)


async def test_a_slow_session_never_blocks_another(fast: World) -> None:
    w = fast
    slow, quick = await w.admin.desk_session(), await w.admin.desk_session()
    # the slow session's call hangs past the timeout; its retry then succeeds
    await w.admin.fault("get_session_state", 1, latency_ms=1000)
    figures.add("faults_injected")
    pending = asyncio.create_task(w.probe.request("desk/get_session_state", {"session_id": slow}))
    await until(lambda: _armed(w) == 0, 5, "the slow call to take the fault")
    for _ in range(5):
        reply = await w.probe.request("desk/get_session_state", {"session_id": quick})
        assert reply["status"] == "ok"
    assert not pending.done(), "the quick session was served only after the slow one"
    slow_reply = await pending
    assert slow_reply["status"] == "ok", slow_reply


def _armed(w: World) -> int:
    return len(w.emu.state.faults.list())


async def test_stream_chunks_survive_faults_exactly_once(fast: World) -> None:
    """Rejections (retryable codes) are retried; a bare 5xx fails the batch and says so. Each
    chunk is then either in the message exactly once, in order, or answered with an error."""
    w = fast
    sid = await w.admin.desk_session(state="agent")
    plan: list[tuple[int, dict[str, Any]]] = [
        (5, {"latency_ms": 30}),
        (2, {"error_code": 60007}),
        (5, {"latency_ms": 30}),
        (1, {"http_status": 503}),
        (5, {"latency_ms": 30}),
        (1, {"error_code": 20004}),
        (3, {"latency_ms": 30}),
    ]
    for count, fault in plan:
        await w.admin.fault("send_stream_msg", count, **fault)
    figures.add("faults_injected", sum(c for c, _ in plan))
    n, wave = 300, 10
    for i in range(n):  # in waves, so that at least n / wave calls meet the planned faults
        await w.probe.publish(f"desk/{sid}/stream", {"chunk": f"<{i}>", "transaction": i})
        if (i + 1) % wave == 0:
            await _answered(w, i + 1)
    await w.probe.publish(f"desk/{sid}/stream", {"chunk": "", "finish": True, "transaction": n})
    await until(lambda: len(_replies(w)) >= n + 1, 20, "every chunk to be answered")
    replies = _replies(w)
    failed = {r["transaction"] for r in replies if r["status"] != "ok"}
    text = "".join(m["text"] for m in await w.admin.messages(sid))
    expected = "".join(f"<{i}>" for i in range(n) if i not in failed)
    figures.add("stream_chunks_sent", n)
    figures.add("stream_chunks_failed_and_reported", len(failed))
    figures.add("stream_chunks_lost", sum(1 for i in range(n) if i not in failed) - text.count("<"))
    assert sorted(r["transaction"] for r in replies) == list(range(n + 1))
    assert failed, "the bare 5xx should have failed one batch"
    assert all(r["error"]["code"] == "upstream_unavailable" for r in replies if r["status"] != "ok")
    assert text == expected  # nothing lost, nothing twice, in order


async def _answered(w: World, count: int) -> None:
    await until(lambda: len(_replies(w)) >= count, 20, f"{count} chunks to be answered")


def _replies(w: World) -> list[dict[str, Any]]:
    return list(w.probe.on("bridge/response/desk/send_stream"))
