"""Open-loop load: requests fired at a fixed rate, through MQTT (the bridge) or HTTP (baseline).

Latency is measured from the moment a request is handed to the socket layer to the moment its
answer is parsed, in this process, for both paths, so the difference is what the bridge adds.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiomqtt

from bridge.mqtt.fastpath import LeanWriter, lean_reads
from bridge.mqtt.transport import no_topic_callbacks, write_from_loop

NODELAY = [(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)]


@dataclass
class Outcome:
    """What one load run saw."""

    sent: int = 0
    latencies: list[float] = field(default_factory=list)
    inner: list[float] = field(default_factory=list)  # the bridge's own `elapsed_ms`, in s
    errors: int = 0
    error_codes: dict[str, int] = field(default_factory=dict)
    send_seconds: float = 0.0

    @property
    def answered(self) -> int:
        """Requests with an answer, good or bad."""
        return len(self.latencies) + self.errors

    def error(self, code: str) -> None:
        """Count one failed request."""
        self.errors += 1
        self.error_codes[code] = self.error_codes.get(code, 0) + 1


async def paced(rate: float, count: int, fire: Callable[[int], None]) -> float:
    """Call `fire(i)` for i in range(count), at `rate` per second; the seconds it took."""
    start = time.perf_counter()
    for i in range(count):
        delay = start + i / rate - time.perf_counter()
        if delay > 0.0005:
            await asyncio.sleep(delay)
        fire(i)
    return time.perf_counter() - start


def mqtt_client(port: int, name: str, *, inflight: int = 0) -> aiomqtt.Client:
    """An MQTT 5 client on the private broker, with TCP_NODELAY. No in-flight limit by default:
    paho walks every message in flight on each PUBACK while one is set."""
    return aiomqtt.Client(
        "127.0.0.1",
        port,
        identifier=f"bench-{name}-{uuid.uuid4().hex[:6]}",
        protocol=aiomqtt.ProtocolVersion.V5,
        socket_options=NODELAY,
        max_inflight_messages=inflight,
        max_queued_incoming_messages=0,
        max_queued_outgoing_messages=0,
        timeout=30,
    )


class MqttRequester:
    """Sends action requests with a unique `transaction` and matches the responses."""

    def __init__(self, port: int, base: str, *, qos: int = 1) -> None:
        self.base = base
        self.qos = qos
        self._client = mqtt_client(port, "req")
        self._pending: dict[int, float] = {}
        self._ids = itertools.count(1)
        self.outcome = Outcome()
        self.on_message: Callable[[str, Any, float], None] | None = None
        self._last_rx = 0.0
        self._writer: LeanWriter | None = None

    async def __aenter__(self) -> MqttRequester:
        await self._client.__aenter__()
        write_from_loop(self._client)  # as the bridge does: no self-pipe write per publish
        self._client._client.on_message = self._arrived  # as the bridge does: no queue, no task
        no_topic_callbacks(self._client)  # and no reference cycle per reply
        lean_reads(self._client)  # and its lean reader
        self._writer = LeanWriter(self._client._client)  # and its lean QoS 1 publish
        await self._client.subscribe(f"{self.base}/bridge/response/#", qos=1)
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._client.__aexit__(None, None, None)

    @property
    def client(self) -> aiomqtt.Client:
        """The connected client, for extra subscriptions."""
        return self._client

    def reset(self) -> Outcome:
        """Start a new run; returns the previous run's outcome."""
        done, self.outcome = self.outcome, Outcome()
        self._pending.clear()
        return done

    def send(self, action: str, payload: dict[str, Any]) -> None:
        """Publish one request without waiting for its PUBACK."""
        tx = next(self._ids)
        body = json.dumps({**payload, "transaction": tx}).encode()
        topic = f"{self.base}/bridge/request/{action}"
        self._pending[tx] = time.perf_counter()
        self.publish_now(topic, body)
        self.outcome.sent += 1

    def publish_now(self, topic: str, body: bytes) -> None:
        """A non-blocking publish, as the bridge's (aiomqtt's `publish` would await each PUBACK)."""
        assert self._writer is not None, "not connected"
        self._writer.publish(topic, body, self.qos, False, None)

    def _arrived(self, *args: Any) -> None:
        """paho's on_message (client, userdata, message), called as the socket is read."""
        now = self._last_rx = time.perf_counter()
        message = args[2]
        body = json.loads(message.payload)
        if self.on_message is not None:
            self.on_message(message.topic, body, now)
        sent = self._pending.pop(body.get("transaction"), None)
        if sent is None:
            return
        if body.get("status") == "ok":
            self.outcome.latencies.append(now - sent)
            self.outcome.inner.append(float(body.get("elapsed_ms", 0)) / 1000)
        else:
            self.outcome.error(str(body.get("error", {}).get("code")))

    async def settle(self, timeout: float) -> None:
        """Wait until every request sent is answered, or `timeout` seconds."""
        deadline = time.monotonic() + timeout
        while self._pending and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    async def run(
        self, rate: float, count: int, make: Callable[[int], tuple[str, dict[str, Any]]]
    ) -> Outcome:
        """Fire `count` requests at `rate`/s, wait for their answers, return the outcome."""
        self.reset()
        self.outcome.send_seconds = await paced(rate, count, lambda i: self.send(*make(i)))
        await self.settle(5.0)
        unanswered = bool(self._pending)
        done = self.reset()
        if unanswered:  # an overloaded run: let the bridge drain it before the next one starts
            await self._quiet(1.0, timeout=120)
        return done

    async def _quiet(self, gap: float, *, timeout: float) -> None:
        """Until no message has arrived for `gap` seconds (bounded by `timeout`)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and time.perf_counter() - self._last_rx < gap:
            await asyncio.sleep(0.1)


class HttpRequester:
    """The same load made directly with httpx: each request a task, latencies per answer."""

    def __init__(self, call: Callable[[int], Awaitable[str | None]]) -> None:
        self._call = call
        self._tasks: set[asyncio.Task[None]] = set()
        self.outcome = Outcome()

    def fire(self, i: int) -> None:
        """Start request `i` now."""
        task = asyncio.create_task(self._one(i))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        self.outcome.sent += 1

    async def _one(self, i: int) -> None:
        start = time.perf_counter()
        try:
            code = await self._call(i)
        except Exception as exc:
            self.outcome.error(type(exc).__name__)
            return
        if code is None:
            self.outcome.latencies.append(time.perf_counter() - start)
        else:
            self.outcome.error(code)

    async def run(self, rate: float, count: int) -> Outcome:
        """Fire `count` requests at `rate`/s and wait for them (bounded)."""
        self.outcome = Outcome()
        self.outcome.send_seconds = await paced(rate, count, self.fire)
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=5.0)
        done, self.outcome = self.outcome, Outcome()
        leftover = list(self._tasks)  # an overloaded run: stop it, so the next one starts clean
        for task in leftover:
            task.cancel()
        await asyncio.gather(*leftover, return_exceptions=True)
        return done
