"""One benchmark setup: broker, emulator and bridge processes, plus the bench's own clients."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from bench.loadgen import MqttRequester
from bench.procs import BridgeProc, Broker, EmulatorProc, bridge_env
from bench.upstream import Admin, Direct, http_client


@dataclass
class Stack:
    """Everything a scenario talks to."""

    broker: Broker
    emulator: EmulatorProc
    bridge: BridgeProc
    base: str
    http: httpx.AsyncClient
    admin: Admin
    direct: Direct
    mqtt: MqttRequester

    async def health(self) -> dict[str, Any]:
        """The bridge's health document, through the `bridge/health_check` action."""
        got: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()

        def catch(topic: str, body: Any, _: float) -> None:
            if topic.endswith("/bridge/response/bridge/health_check") and not got.done():
                got.set_result(body.get("data", {}))

        self.mqtt.on_message = catch
        try:
            self.mqtt.publish_now(f"{self.base}/bridge/request/bridge/health_check", b"{}")
            return await asyncio.wait_for(got, 10)
        finally:
            self.mqtt.on_message = None


@contextlib.asynccontextmanager
async def stack(workdir: Path, **bridge_settings: str) -> AsyncIterator[Stack]:
    """Start a broker, an emulator and a bridge; stop them all at the end."""
    workdir.mkdir(parents=True, exist_ok=True)
    base = f"b{uuid.uuid4().hex[:8]}"
    broker = Broker(workdir)
    emulator = EmulatorProc(workdir)
    broker.start()
    try:
        emulator.start()
        bridge = BridgeProc(workdir, bridge_env(emulator, broker, base, **bridge_settings))
        bridge.start()
        try:
            async with http_client() as http, MqttRequester(broker.port, base) as mqtt:
                parts = Stack(
                    broker,
                    emulator,
                    bridge,
                    base,
                    http,
                    Admin(http, emulator.base_url),
                    Direct(http, emulator.info),
                    mqtt,
                )
                await wait_online(parts)
                yield parts
        finally:
            bridge.stop()
    finally:
        emulator.stop()
        broker.kill()


async def wait_online(parts: Stack) -> None:
    deadline = time.monotonic() + 20
    while True:
        try:
            await asyncio.wait_for(parts.health(), 1.0)
            return
        except TimeoutError as exc:
            if time.monotonic() > deadline:
                log = parts.bridge.log_path
                raise RuntimeError(f"the bridge did not answer; see {log}") from exc
