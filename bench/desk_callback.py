"""Desk state changes by callback against polling (docs/protocol.md B.6, C.6), same run.

Callback path: the bench plays Tencent and POSTs `Desk.SessionEventNotify` (`Transfer.Start`,
a session moving to Queuing) to the bridge's callback path at RATE/s; the figure is the time
from the POST to the `transfer_started` event on MQTT, and the time to the HTTP answer.
Polling path: the same change (Chatbot -> Queuing) made in the emulator for watched sessions at
the same rate, timed from the admin call to the `state_changed` event, with the documented
default `desk.poll_interval` (5 s). Burst: 1,000 notifications written at once, then 1,000
spread over one second -> 1,000 events each, none lost, each answer's time. The floor: the
same burst against uvicorn alone (bench/bare_asgi.py), so the burst's slowest answer is also
given as a ratio to what the server and the client cost without the bridge.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

from bench.loadgen import paced
from bench.stack import Stack, stack
from bench.stats import summary

RATE = 200.0
POLL_INTERVAL = 5.0
BURST = 1000
COMMAND = "Desk.SessionEventNotify"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Callback and polling latency at RATE/s, then a burst of BURST notifications."""
    count = 400 if quick else 1000
    port, path = _free_port(), f"/desk/callback/{secrets.token_urlsafe(24)}"
    settings = {
        "TENCENT2MQTT_HTTP__LISTEN": f"127.0.0.1:{port}",
        "TENCENT2MQTT_DESK__CALLBACK": path,
        "TENCENT2MQTT_DESK__POLL_INTERVAL": str(POLL_INTERVAL),
        "TENCENT2MQTT_DESK__RATE_LIMIT": "2000",
    }
    async with stack(workdir / "desk_callback", **settings) as s:
        events = Events()
        s.mqtt.on_message = events.arrived
        await s.mqtt.subscribe(f"{s.base}/desk/+/event", qos=1)
        url = f"http://127.0.0.1:{port}{path}"
        sdkappid = str(s.emulator.info["sdkappid"])
        _say("callback path")
        callback = await _callback_path(url, sdkappid, events, count)
        _say("polling path")
        polling = await _polling_path(s, events, count)
        _say("bursts")
        burst = await _burst(url, sdkappid, events, spread_s=0.0)
        spread = await _burst(url, sdkappid, events, spread_s=1.0)
        floor = await _floor(sdkappid)
    burst["answer_max_over_floor"] = round(burst["answer"]["max_ms"] / floor["max_ms"], 2)
    return {
        "rate_per_s": RATE,
        "changes": count,
        "poll_interval_s": POLL_INTERVAL,
        "callback": callback,
        "polling": polling,
        "burst": burst,
        "burst_over_1s": spread,
        "burst_floor": floor,
        "target": {"burst_answer_max_ms": 100.0, "burst_lost": 0},
    }


def _say(phase: str) -> None:
    print(f"bench: desk_callback: {phase}", file=sys.stderr, flush=True)


class Events:
    """MQTT events by (session id, type), with the time each first arrived."""

    def __init__(self) -> None:
        self.first: dict[tuple[str, str], float] = {}
        self.count: dict[str, int] = {}

    def arrived(self, topic: str, body: Any, now: float) -> None:
        """The requester's hook, called as each message is read."""
        if not topic.endswith("/event") or not isinstance(body, dict):
            return
        key = (str(body.get("session_id")), str(body.get("type")))
        self.first.setdefault(key, now)
        self.count[key[1]] = self.count.get(key[1], 0) + 1

    async def wait(self, keys: list[tuple[str, str]], timeout: float) -> None:
        """Until every key has arrived, or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and any(k not in self.first for k in keys):
            await asyncio.sleep(0.02)


async def _callback_path(url: str, sdkappid: str, events: Events, count: int) -> dict[str, Any]:
    """`Transfer.Start` for `count` sessions at RATE/s: POST -> answer, POST -> MQTT event."""
    sids = [f"cb-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    sent = await _fire(url, sdkappid, sids, "Transfer.Start", spread_s=count / RATE)
    keys = [(sid, "transfer_started") for sid in sids]
    await events.wait(keys, timeout=30)
    latencies = [events.first[k] - sent.at[k[0]] for k in keys if k in events.first]
    result: dict[str, Any] = {"event": summary(latencies), "answer": summary(sent.answers)}
    result["lost"], result["not_ok"] = count - len(latencies), sent.not_ok
    return result


async def _polling_path(s: Stack, events: Events, count: int) -> dict[str, Any]:
    sids: list[str] = []
    for _ in range(0, count, 50):  # the setup, 50 at a time
        sids += await asyncio.gather(*(_watched(s) for _ in range(min(50, count - len(sids)))))
    await events.wait([(sid, "state_changed") for sid in sids], timeout=3 * POLL_INTERVAL + 30)
    events.first = {k: v for k, v in events.first.items() if k[1] != "state_changed"}
    changed: dict[str, float] = {}
    room = asyncio.Semaphore(20)  # the admin client's pool must not starve on a slow host

    async def move(sid: str) -> None:
        async with room:
            changed[sid] = time.perf_counter()
            await s.admin.call("POST", f"/desk/sessions/{sid}/state", {"state": "queuing"})

    tasks: set[asyncio.Task[None]] = set()
    await paced(RATE, count, lambda i: tasks.add(asyncio.create_task(move(sids[i]))))
    await asyncio.gather(*tasks)
    keys = [(sid, "state_changed") for sid in sids]
    await events.wait(keys, timeout=2 * POLL_INTERVAL + 30)
    latencies = [events.first[k] - changed[k[0]] for k in keys if k in events.first]
    return {"event": summary(latencies), "lost": count - len(latencies)}


async def _watched(s: Stack) -> str:
    body = await s.admin.call("POST", "/desk/sessions", {"state": "chatbot"})
    sid = str(body["session_id"])
    s.mqtt.send("desk/watch", {"session_id": sid})
    return sid


@dataclass
class Sent:
    """When each notification was written, how long each answer took, how many were not OK."""

    at: dict[str, float] = field(default_factory=dict)
    answers: list[float] = field(default_factory=list)
    not_ok: int = 0


async def _fire(url: str, sdkappid: str, sids: list[str], event: str, *, spread_s: float) -> Sent:
    """One connection per notification, opened first (not timed); the requests written at once
    or spread evenly over `spread_s`; each answer timed from its own write, so the figure is
    the bridge's, not a client pool's."""
    parts = urlsplit(url)
    conns = [await asyncio.open_connection(parts.hostname, parts.port) for _ in sids]
    sent, start = Sent(), time.perf_counter()

    async def one(i: int, conn: tuple[asyncio.StreamReader, asyncio.StreamWriter]) -> None:
        await asyncio.sleep(max(0.0, start + i * spread_s / len(sids) - time.perf_counter()))
        sent.at[sids[i]] = time.perf_counter()
        elapsed, ok = await _answer(conn, _raw_post(parts.path, sdkappid, sids[i], event))
        sent.answers.append(elapsed)
        sent.not_ok += 0 if ok else 1

    await asyncio.gather(*(one(i, conn) for i, conn in enumerate(conns)))
    return sent


async def _burst(url: str, sdkappid: str, events: Events, *, spread_s: float) -> dict[str, Any]:
    """BURST user messages at once (or over `spread_s`) -> BURST `user_message` events."""
    sids = [f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(BURST)]
    sent = await _fire(url, sdkappid, sids, "ChatBot.UserSendMsg", spread_s=spread_s)
    keys = [(sid, "user_message") for sid in sids]
    await events.wait(keys, timeout=30)
    published = sum(1 for k in keys if k in events.first)
    result: dict[str, Any] = {"sent": BURST, "spread_s": spread_s, "events": published}
    result["lost"] = BURST - published
    result.update(answer=summary(sent.answers), not_ok=sent.not_ok)
    return result


async def _floor(sdkappid: str) -> dict[str, Any]:
    """The same burst against bench/bare_asgi.py (uvicorn answering OK, no bridge), same run."""
    port = _free_port()
    args = [sys.executable, "-m", "bench.bare_asgi", str(port)]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        url = f"http://127.0.0.1:{port}/floor"
        await until_listening("127.0.0.1", port)
        sids = [f"floor-{i}" for i in range(BURST)]
        sent = await _fire(url, sdkappid, sids, "ChatBot.UserSendMsg", spread_s=0.0)
        return {**summary(sent.answers), "not_ok": sent.not_ok}
    finally:
        proc.terminate()
        proc.wait(10)


async def until_listening(host: str, port: int, timeout: float = 10.0) -> None:
    """Until something accepts connections on host:port."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            _, writer = await asyncio.open_connection(host, port)
        except OSError:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return


def _raw_post(path: str, sdkappid: str, sid: str, event: str) -> bytes:
    query = urlencode(
        {"SdkAppid": sdkappid, "CallbackCommand": COMMAND, "contenttype": "json"}
        | {"RequestID": uuid.uuid4().hex}
    )
    text = {"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}}
    body = {"CallbackCommand": COMMAND, "SessionId": sid, "Event": event}
    raw = json.dumps({**body, "MsgBody": [text], "EventTime": int(time.time() * 1000)}).encode()
    head = f"POST {path}?{query} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
    return head.encode() + raw


async def _answer(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes
) -> tuple[float, bool]:
    reader, writer = conn
    start = time.perf_counter()
    writer.write(request)
    status = await reader.readline()
    elapsed = time.perf_counter() - start
    rest = await reader.read()
    writer.close()
    return elapsed, status.split()[1:2] == [b"200"] and b'"ActionStatus":"OK"' in rest
