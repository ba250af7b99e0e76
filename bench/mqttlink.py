"""The MQTT link alone: CPU of this process per message out and per message in.

Out: QoS 1 events published through `MqttLink.publish`, until `close()` has seen every PUBACK.
In: QoS 1 requests from a `mosquitto_pub` process (its CPU is its own), until the inbox took
them all. Only the link's public API is used, so the same file measures any commit (A/B in
docs/performance.md, "MQTT fast path"); CPU time rather than wall time, because it holds up
better on a shared machine. The fast path follows `TENCENT2MQTT_MQTT__FAST_PATH`.
`python -m bench --only mqttlink`, or `python bench/mqttlink.py` on its own.
"""

from __future__ import annotations

import asyncio
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bridge.cli.demo.broker import Mosquitto
from bridge.config import MqttConfig
from bridge.core.inbound import Inbound
from bridge.core.topics import Topics
from bridge.mqtt.link import MqttLink

PAYLOAD = b'{"event":"frame","data":{"text":"' + b"y" * 150 + b'"}}'


class _Counting:
    """An inbox that takes everything and says when it has `want` messages."""

    def __init__(self, want: int) -> None:
        self.want = want
        self.taken = 0
        self.done = asyncio.Event()

    def offer(self, _: Inbound) -> bool:
        self.taken += 1
        if self.taken >= self.want:
            self.done.set()
        return True

    async def room(self) -> None:
        return None

    def refuse(self, _: Inbound) -> None:
        raise AssertionError("an inbox that takes everything refuses nothing")

    def keeps_order(self, _: Inbound) -> bool:
        return False


def _config(broker: Mosquitto, base: str) -> MqttConfig:
    options: dict[str, Any] = {"url": broker.url, "base_topic": base, "client_id": base}
    if "fast_path" in MqttConfig.model_fields:  # commits before issue 18 have no such setting
        options["fast_path"] = os.environ.get("TENCENT2MQTT_MQTT__FAST_PATH", "true") != "false"
    return MqttConfig(**options)


async def _link_run(broker: Mosquitto, base: str, count: int, lines: Path) -> dict[str, float]:
    inbox = _Counting(count)
    link = MqttLink(_config(broker, base), Topics(base), subscriptions=[f"{base}/req/#"])
    runner = asyncio.create_task(link.run(inbox))
    await asyncio.wait_for(link.connected.wait(), 30)
    await asyncio.sleep(0.5)  # the birth messages are acknowledged
    cpu = time.process_time()
    for i in range(count):
        link.publish(f"{base}/events/{i % 50}", PAYLOAD)
    out_us = await _flushed(link, cpu, count)
    publisher = subprocess.Popen(
        [
            "mosquitto_pub",
            "-h",
            "127.0.0.1",
            "-p",
            str(broker.port),
            "-q",
            "1",
            "-V",
            "mqttv5",
            "-t",
            f"{base}/req/x",
            "-l",
        ],
        stdin=lines.open("rb"),
    )
    cpu = time.process_time()
    await asyncio.wait_for(inbox.done.wait(), 300)
    in_us = (time.process_time() - cpu) * 1e6 / count
    publisher.wait(30)
    await link.close(grace=60)
    await runner
    return {"out_cpu_us_per_message": round(out_us, 1), "in_cpu_us_per_message": round(in_us, 1)}


async def _flushed(link: MqttLink, cpu: float, count: int) -> float:
    """CPU microseconds per message until the outbox is sent and acknowledged."""
    while link.outbox_depth:
        await asyncio.sleep(0.01)
    await asyncio.sleep(0.2)  # the last PUBACKs (the window is at most 256)
    return (time.process_time() - cpu) * 1e6 / count


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """Median of a few runs of `count` messages each way."""
    count, runs = (5_000, 2) if quick else (20_000, 5)
    lines = workdir / "mqttlink-lines"
    lines.parent.mkdir(parents=True, exist_ok=True)
    lines.write_bytes(b"".join(b'{"n":%d}\n' % i for i in range(count)))
    (workdir / "mqttlink-broker").mkdir(parents=True, exist_ok=True)
    broker = Mosquitto(workdir / "mqttlink-broker")
    broker.start()
    try:
        results = [
            await _link_run(broker, f"ml{i}{os.getpid()}", count, lines) for i in range(runs)
        ]
    finally:
        broker.stop()
    out = {k: statistics.median(r[k] for r in results) for k in results[0]}
    return {"messages": count, "runs": results, **out, "fast_path_env": _env()}


def _env() -> str:
    return os.environ.get("TENCENT2MQTT_MQTT__FAST_PATH", "(unset)")


if __name__ == "__main__":
    with tempfile.TemporaryDirectory(prefix="bench-") as tmp:
        print(json.dumps(asyncio.run(run(Path(tmp), quick="--quick" in sys.argv)), indent=2))
