"""`tencent2mqtt demo` as a user runs it: a subprocess whose output is read line by line."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import sys

import pytest

from bridge.cli.demo.runner import DemoOptions, run_demo
from tests.support.bridge import settings_for
from tests.support.broker import Broker
from tests.support.mqtt_probe import Probe

SUB_LINE = re.compile(r"mosquitto_sub -h 127\.0\.0\.1 -p (\d+) -t 'tencent2mqtt/#' -v")


async def start_demo(*args: str, **extra: str) -> asyncio.subprocess.Process:
    env = {**os.environ, "TENCENT2MQTT_CONFIG": "", "PYTHONUNBUFFERED": "1", **extra}
    return await asyncio.create_subprocess_exec(
        sys.executable, "-m", "bridge", "demo", "--no-color", *args, env=env,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )  # fmt: skip


async def read_until(proc: asyncio.subprocess.Process, pattern: str, lines: list[str]) -> str:
    """Read lines (keeping them) until one contains `pattern`; bounded."""
    assert proc.stdout is not None
    async with asyncio.timeout(30):
        while True:
            raw = await proc.stdout.readline()
            if not raw:
                raise AssertionError(f"demo ended before {pattern!r}:\n" + "".join(lines))
            line = raw.decode()
            lines.append(line)
            if pattern in line:
                return line


def listening(port: int) -> bool:
    with socket.socket() as sock:
        return sock.connect_ex(("127.0.0.1", port)) == 0


async def test_demo_runs_the_whole_script_and_exits_0() -> None:
    proc = await start_demo("--once", "--pace", "0")
    out, _ = await asyncio.wait_for(proc.communicate(), 45)
    text = out.decode()
    assert proc.returncode == 0, text
    port = int(SUB_LINE.search(text).group(1))  # type: ignore[union-attr]
    assert not listening(port)  # its private mosquitto is gone
    lines = text.splitlines()

    def traffic(kind: str, topic_part: str, payload_part: str = "") -> list[str]:
        return [
            line
            for line in lines
            if len(line.split()) > 2
            and line.split()[1] == kind
            and topic_part in line.split()[2]
            and payload_part in line
        ]

    assert traffic("state", "tencent2mqtt/bridge/state", '"online"')
    assert traffic("request", "bridge/request/ivh/create_session")
    assert traffic("response", "tencent2mqtt/bridge/", '"status":"ok"')
    assert traffic("state", "/state", '"status":"in_progress"')
    assert traffic("state", "/channel", '"connected"')
    assert traffic("event", "/event", '"type":"speak_status"')
    assert traffic("event", "/event", '"type":"llm_content"')
    assert traffic("request", "/audio", "bytes of audio")
    assert traffic("response", "bridge/response/ivh/send_audio", '"status":"ok"')
    assert traffic("event", "tencent2mqtt/desk/", '"type":"stream_finished"')
    assert traffic("request", "/close")
    assert traffic("state", "/state", '"status":"closed"')
    assert traffic("state", "tencent2mqtt/bridge/state", '"shutdown"')
    assert not [line for line in lines if '"status":"error"' in line]
    assert "step failed" not in text
    assert text.rstrip().endswith("demo stopped: bridge, emulator and broker are down")


async def test_the_demo_runs_as_one_instance_of_a_cluster() -> None:
    cluster = {"TENCENT2MQTT_CLUSTER__ENABLED": "true", "TENCENT2MQTT_CLUSTER__SETTLE": "0.5"}
    proc = await start_demo("--once", "--pace", "0", **cluster)
    out, _ = await asyncio.wait_for(proc.communicate(), 60)
    text = out.decode()
    assert proc.returncode == 0, text
    assert "bridge/instances/" in text and '"active"' in text  # its membership document
    assert "step failed" not in text and '"status":"error"' not in text


async def test_ctrl_c_stops_everything_it_started() -> None:
    proc = await start_demo("--pace", "0.5")
    lines: list[str] = []
    try:
        port = int(SUB_LINE.search(await read_until(proc, "mosquitto_sub", lines)).group(1))  # type: ignore[union-attr]
        assert listening(port)
        await read_until(proc, "kiosk: start it", lines)
        proc.send_signal(signal.SIGINT)
        rest, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, "".join(lines) + rest.decode()
    assert "demo stopped" in rest.decode()
    assert "Traceback" not in rest.decode()
    assert not listening(port)


async def test_duration_ends_the_demo() -> None:
    proc = await start_demo("--duration", "1", "--pace", "5")
    out, _ = await asyncio.wait_for(proc.communicate(), 30)
    assert proc.returncode == 0, out.decode()
    assert "demo stopped" in out.decode()


async def test_without_mosquitto_it_uses_the_configured_broker(
    broker: Broker, base: str, capsys: pytest.CaptureFixture[str]
) -> None:
    options = DemoOptions(
        settings=settings_for(broker.url, base),
        private_broker=False,
        base_topic=base,
        duration=None,
        once=True,
        pace=0,
        color=False,
    )
    async with Probe(broker.port, base) as probe:
        assert await run_demo(options) == 0
    out = capsys.readouterr().out
    assert f"mosquitto_sub -h 127.0.0.1 -p {broker.port} -t '{base}/#' -v" in out
    assert "the configured broker" in out
    states = [
        m.json()
        for m in probe.messages
        if m.topic.startswith(f"{base}/ivh/") and m.topic.endswith("/state") and m.payload
    ]
    assert [s["status"] for s in states][-1] == "closed"
    assert any(m.topic.startswith(f"{base}/desk/") for m in probe.messages)
