"""Desk state changes by callback against polling (docs/protocol.md B.6, C.6), same run.

Callback path: the bench plays Tencent and POSTs `Desk.SessionEventNotify` (`Transfer.Start`,
a session moving to Queuing) to the bridge's callback path at RATE/s; the figure is the time
from the POST to the `transfer_started` event on MQTT, and the time to the HTTP answer.
Polling path: the same change (Chatbot -> Queuing) made in the emulator for watched sessions at
the same rate, timed from the admin call to the `state_changed` event, with the documented
default `desk.poll_interval` (5 s). Burst: 1,000 notifications written at once, then 1,000
spread over one second -> 1,000 events each, none lost, each answer's time.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import socket
import time
import uuid
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import httpx

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
    count = 400 if quick else 2000
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
        await s.mqtt.client.subscribe(f"{s.base}/desk/+/event", qos=1)
        url = f"http://127.0.0.1:{port}{path}"
        limits = httpx.Limits(max_connections=BURST, max_keepalive_connections=BURST)
        async with httpx.AsyncClient(timeout=10, limits=limits) as http:
            sdkappid = str(s.emulator.info["sdkappid"])
            post = Poster(http, url, sdkappid)
            callback = await _callback_path(post, events, count)
            polling = await _polling_path(s, events, count)
            burst = await _burst(url, sdkappid, events, spread_s=0.0)
            spread = await _burst(url, sdkappid, events, spread_s=1.0)
    return {
        "rate_per_s": RATE,
        "changes": count,
        "poll_interval_s": POLL_INTERVAL,
        "callback": callback,
        "polling": polling,
        "burst": burst,
        "burst_over_1s": spread,
        "target": {"burst_answer_max_ms": 100.0, "burst_lost": 0},
    }


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


class Poster:
    """POSTs notifications as Tencent would, timing each answer."""

    def __init__(self, http: httpx.AsyncClient, url: str, sdkappid: str) -> None:
        self._http, self._url, self._sdkappid = http, url, sdkappid
        self.sent: dict[str, float] = {}
        self.answers: list[float] = []
        self.not_ok = 0
        self._tasks: set[asyncio.Task[None]] = set()

    def fire(self, sid: str, event: str, **extra: Any) -> None:
        """Start one POST now."""
        task = asyncio.create_task(self._post(sid, event, extra))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _post(self, sid: str, event: str, extra: dict[str, Any]) -> None:
        params = {"SdkAppid": self._sdkappid, "CallbackCommand": COMMAND, "contenttype": "json"}
        params["RequestID"] = uuid.uuid4().hex
        body = {"CallbackCommand": COMMAND, "SessionId": sid, "Event": event, **extra}
        body["EventTime"] = int(time.time() * 1000)
        start = self.sent[sid] = time.perf_counter()
        answer = await self._http.post(self._url, params=params, json=body)
        self.answers.append(time.perf_counter() - start)
        if answer.status_code != 200 or answer.json().get("ActionStatus") != "OK":
            self.not_ok += 1

    async def drain(self) -> None:
        """Wait for every POST in flight."""
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def reset(self) -> None:
        """Start a new phase."""
        self.sent, self.answers, self.not_ok = {}, [], 0


async def _callback_path(post: Poster, events: Events, count: int) -> dict[str, Any]:
    sids = [f"cb-{i}-{uuid.uuid4().hex[:6]}" for i in range(count)]
    await paced(RATE, count, lambda i: post.fire(sids[i], "Transfer.Start"))
    await post.drain()
    keys = [(sid, "transfer_started") for sid in sids]
    await events.wait(keys, timeout=30)
    latencies = [events.first[k] - post.sent[k[0]] for k in keys if k in events.first]
    result: dict[str, Any] = {"event": summary(latencies), "answer": summary(post.answers)}
    result["lost"], result["not_ok"] = count - len(latencies), post.not_ok
    post.reset()
    return result


async def _polling_path(s: Stack, events: Events, count: int) -> dict[str, Any]:
    sids = [await _watched(s) for _ in range(count)]
    await events.wait([(sid, "state_changed") for sid in sids], timeout=3 * POLL_INTERVAL + 30)
    events.first = {k: v for k, v in events.first.items() if k[1] != "state_changed"}
    changed: dict[str, float] = {}

    async def move(sid: str) -> None:
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


async def _burst(url: str, sdkappid: str, events: Events, *, spread_s: float) -> dict[str, Any]:
    """BURST connections opened first (not timed), then the requests written at once (or spread
    evenly over `spread_s`); each answer is timed from its own write, so the figure is the
    bridge's, not a client pool's."""
    sids = [f"burst-{i}-{uuid.uuid4().hex[:6]}" for i in range(BURST)]
    parts = urlsplit(url)
    conns = [await asyncio.open_connection(parts.hostname, parts.port) for _ in sids]
    requests = [_raw_post(parts.path, sdkappid, sid) for sid in sids]
    start = time.perf_counter()
    timed = [
        _answer(conn, req, at=start + i * spread_s / BURST)
        for i, (conn, req) in enumerate(zip(conns, requests, strict=True))
    ]
    answers = await asyncio.gather(*timed)
    keys = [(sid, "user_message") for sid in sids]
    await events.wait(keys, timeout=30)
    published = sum(1 for k in keys if k in events.first)
    not_ok = sum(1 for _, ok in answers if not ok)
    result: dict[str, Any] = {"sent": BURST, "spread_s": spread_s, "events": published}
    result["lost"] = BURST - published
    result.update(answer=summary([t for t, _ in answers]), not_ok=not_ok)
    return result


def _raw_post(path: str, sdkappid: str, sid: str) -> bytes:
    query = urlencode(
        {"SdkAppid": sdkappid, "CallbackCommand": COMMAND, "contenttype": "json"}
        | {"RequestID": uuid.uuid4().hex}
    )
    text = {"MsgType": "TIMTextElem", "MsgContent": {"Text": "hello"}}
    body = {"CallbackCommand": COMMAND, "SessionId": sid, "Event": "ChatBot.UserSendMsg"}
    raw = json.dumps({**body, "MsgBody": [text], "EventTime": int(time.time() * 1000)}).encode()
    head = f"POST {path}?{query} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
    head += f"Content-Length: {len(raw)}\r\nConnection: close\r\n\r\n"
    return head.encode() + raw


async def _answer(
    conn: tuple[asyncio.StreamReader, asyncio.StreamWriter], request: bytes, *, at: float
) -> tuple[float, bool]:
    reader, writer = conn
    await asyncio.sleep(max(0.0, at - time.perf_counter()))
    start = time.perf_counter()
    writer.write(request)
    status = await reader.readline()
    elapsed = time.perf_counter() - start
    rest = await reader.read()
    writer.close()
    return elapsed, status.split()[1:2] == [b"200"] and b'"ActionStatus":"OK"' in rest
