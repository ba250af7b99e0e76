"""Scenario 3: a Desk stream of 2,000 chunks at 1,000 chunks/s with 50 ms upstream latency.

Through the bridge (ordered, coalesced) vs one call per chunk made directly with httpx as each
chunk arrives (what a naive flow does: the first call's MsgKey awaited, then a call per chunk).
Lag: from the last chunk published to the completion of the call that carried it.
"""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

from bench.loadgen import paced
from bench.stack import Stack, stack

RATE = 1000.0
LATENCY_MS = 50
NAIVE_INFLIGHT = 100  # calls in flight at most (the HTTP pool's keep-alive size)


def chunk(i: int) -> str:
    """The text of chunk i: its number, so order and duplicates show in the joined text."""
    return f"{i:05d} "


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Calls, lag and delivery of both paths."""
    chunks, repeats = 2000, (1 if quick else 3)
    async with stack(workdir / "streams") as s:
        await s.admin.fault("send_stream_msg", 1_000_000, latency_ms=LATENCY_MS)
        rtt = await _round_trip(s, await s.admin.desk_session())
        runs = [await _bridge(s, await s.admin.desk_session(), chunks) for _ in range(repeats)]
        naive = await _naive(s, await s.admin.desk_session(), chunks)
    bridge = sorted(runs, key=lambda r: r["lag_ms"] or 1e9)[len(runs) // 2]  # the median run
    lag = bridge["lag_ms"]
    return {
        "chunks": chunks,
        "rate_per_s": RATE,
        "upstream_latency_ms": LATENCY_MS,
        "upstream_round_trip_ms": rtt,
        "bridge": {**bridge, "lag_round_trips": round(lag / rtt, 2) if lag and rtt else None},
        "bridge_lags_ms": [r["lag_ms"] for r in runs],
        "naive_call_per_chunk": naive,
        "target": {"lag_round_trips": 2, "calls": chunks // 10},
    }


async def _round_trip(s: Stack, sid: str) -> float:
    """The median of 10 sequential direct calls: one upstream round trip, measured."""
    key: str | None = None
    times: list[float] = []
    for i in range(10):
        started = time.perf_counter()
        body = {"SessionId": sid, "Chunk": chunk(i), "MsgKey": key, "Finish": int(i == 9)}
        _, reply = await s.direct.desk("send_stream_msg", body)
        key = key or reply.get("MsgKey")
        times.append(time.perf_counter() - started)
    return round(sorted(times)[len(times) // 2] * 1000, 1)


async def _bridge(s: Stack, sid: str, count: int) -> dict[str, Any]:
    topic = f"{s.base}/bridge/request/desk/send_stream"
    s.mqtt.reset()

    def fire(i: int) -> None:
        body = {"session_id": sid, "chunk": chunk(i)}
        if i == count - 1:
            s.mqtt.send("desk/send_stream", {**body, "finish": True})
        else:
            s.mqtt.publish_now(topic, json.dumps(body).encode())

    await paced(RATE, count, fire)
    await s.mqtt.settle(30.0)
    outcome = s.mqtt.reset()
    lag = outcome.latencies[0] if outcome.latencies else None
    return {"lag_ms": _ms(lag), "errors": outcome.errors, **await _delivered(s, sid, count)}


async def _naive(s: Stack, sid: str, count: int) -> dict[str, Any]:
    errors: list[str] = []
    key: str | None = None
    last_done: list[float] = []

    async def send(i: int) -> None:
        body: dict[str, Any] = {"SessionId": sid, "Chunk": chunk(i), "MsgKey": key}
        if i == count - 1:
            body["Finish"] = 1
        code, _ = await s.direct.desk("send_stream_msg", body)
        if code is not None:
            errors.append(code)
        if i == count - 1:
            last_done.append(time.perf_counter())

    first: asyncio.Future[None] | None = None
    tasks: list[asyncio.Task[None]] = []
    slots = asyncio.Semaphore(NAIVE_INFLIGHT)

    async def limited(i: int) -> None:
        async with slots:
            await send(i)

    async def first_call() -> None:
        nonlocal key
        code, reply = await s.direct.desk("send_stream_msg", {"SessionId": sid, "Chunk": chunk(0)})
        key = reply.get("MsgKey")
        if code is not None:
            errors.append(code)

    def fire(i: int) -> None:
        nonlocal first
        if i == 0:
            first = asyncio.ensure_future(first_call())
            return
        tasks.append(asyncio.create_task(_after(first, limited(i))))

    started = time.perf_counter()
    seconds = await paced(RATE, count, fire)
    await asyncio.wait(tasks, timeout=120)
    lag = last_done[0] - (started + seconds) if last_done else None
    unfinished = sum(1 for t in tasks if not t.done())
    for task in tasks:
        task.cancel()
    report = {"lag_ms": _ms(lag), "errors": len(errors), "unfinished_after_120s": unfinished}
    return {**report, **await _delivered(s, sid, count)}


async def _after(first: asyncio.Future[None] | None, then: Any) -> None:
    if first is not None:
        await asyncio.shield(first)
    await then


async def _delivered(s: Stack, sid: str, count: int) -> dict[str, Any]:
    body = await s.admin.call("GET", f"/desk/sessions/{sid}/messages")
    messages = body["messages"]
    text = "".join(c for m in messages for c in m["chunks"])
    expected = "".join(chunk(i) for i in range(count))
    got = [text[i : i + 6] for i in range(0, len(text), 6)]
    return {
        "calls": sum(m["calls"] for m in messages),
        "messages": len(messages),
        "all_once_in_order": text == expected,
        "chunks_received": len(got),
        "duplicates": len(got) - len(set(got)),
    }


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)
