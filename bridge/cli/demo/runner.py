"""Starts and stops everything the demo needs, in order, and the kiosk in the middle."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from bridge.app import App
from bridge.cli.demo.broker import Mosquitto, free_port, mosquitto_binary
from bridge.cli.demo.kiosk import Kiosk, KioskFailed
from bridge.cli.demo.monitor import Monitor
from bridge.config import Settings
from bridge.core.topics import Topics
from bridge.emulator import Emulator, EmulatorConfig
from bridge.mqtt.toolclient import ToolClient

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class DemoOptions:
    """What the command line asked for."""

    settings: Settings
    private_broker: bool
    base_topic: str
    duration: float | None
    once: bool
    pace: float
    color: bool


@contextlib.contextmanager
def broker_url(opts: DemoOptions) -> Iterator[str]:
    """A private mosquitto's URL while the block runs, or the configured broker's."""
    if not opts.private_broker:
        yield opts.settings.mqtt.url
        return
    with tempfile.TemporaryDirectory(prefix="tencent2mqtt-demo-") as tmp:
        broker = Mosquitto(Path(tmp))
        broker.start()
        try:
            yield broker.url
        finally:
            broker.stop()


def can_start_mosquitto() -> bool:
    """Whether a private mosquitto can be started here."""
    return mosquitto_binary() is not None


def bridge_settings(opts: DemoOptions, url: str, emu: Emulator, http_port: int) -> Settings:
    """The demo bridge: the emulator as upstream, quick polling, the HTTP endpoint on."""
    info = emu.info()
    mqtt = opts.settings.mqtt.model_dump()
    client_id = f"tencent2mqtt-demo-{uuid.uuid4().hex[:8]}"
    mqtt |= {"url": url, "base_topic": opts.base_topic, "client_id": client_id}
    data: dict[str, Any] = {
        "mqtt": mqtt,
        "ivh": {
            "base_url": info["ivh_base_url"],
            "appkey": info["appkey"],
            "access_token": info["access_token"],
            "poll_interval": 1.0,
            "closed_retention": 5.0,
            "channel": {"url": info["ivh_channel_url"]},
        },
        "desk": {
            "base_url": info["desk_base_url"],
            "sdkappid": info["sdkappid"],
            "identifier": info["identifier"],
            "secret_key": info["secret_key"],
            "poll_interval": 1.0,
        },
        "bridge": {"health_interval": 30.0, "shutdown_timeout": 5.0},
        "http": {"listen": f"127.0.0.1:{http_port}"},
    }
    return Settings(**data)


async def run_demo(opts: DemoOptions) -> int:
    """Run until Ctrl-C, SIGTERM, `--duration` or (with `--once`) the end of the script."""
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    emulated = EmulatorConfig.generate(prepare_delay=min(1.0, opts.pace), speak_delay=0.1)
    try:
        with broker_url(opts) as url:
            async with Emulator(emulated) as emu:
                settings = bridge_settings(opts, url, emu, free_port())
                return await _with_bridge(opts, settings, emu, stop)
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


async def _with_bridge(
    opts: DemoOptions, settings: Settings, emu: Emulator, stop: asyncio.Event
) -> int:
    app, app_stop = App(settings), asyncio.Event()
    async with (
        ToolClient(settings.mqtt, name="demo-monitor") as watch,
        ToolClient(settings.mqtt, name="demo-kiosk") as kiosk_client,
    ):
        monitor = Monitor(watch, opts.base_topic, color=opts.color)
        await monitor.subscribe()
        await kiosk_client.prepare_replies(Topics(opts.base_topic))
        _banner(opts, settings, emu, monitor)
        kiosk = Kiosk(
            client=kiosk_client,
            monitor=monitor,
            topics=Topics(opts.base_topic),
            admin_url=emu.base_url + "/emulator",
            pace=opts.pace,
            color=opts.color,
        )
        bridge = asyncio.create_task(app.run(app_stop), name="demo-bridge")
        printer = asyncio.create_task(monitor.run(), name="demo-monitor")
        outcome = await _script(opts, kiosk, stop)
        app_stop.set()
        await asyncio.wait_for(bridge, settings.bridge.shutdown_timeout + 10)
        await asyncio.sleep(0.2)  # let the monitor print the bridge's `offline`
        printer.cancel()
        await asyncio.gather(printer, return_exceptions=True)
    monitor.echo("demo stopped: bridge, emulator and broker are down")
    return outcome


async def _script(opts: DemoOptions, kiosk: Kiosk, stop: asyncio.Event) -> int:
    """Run the kiosk; wait for the stop condition; 1 when the script failed."""
    script = asyncio.create_task(kiosk.run(), name="demo-kiosk")
    timer = asyncio.create_task(_timer(opts.duration, stop))
    outcome = 0
    try:
        waiters = {script, asyncio.create_task(stop.wait())}
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        if script.done():
            outcome = _report(kiosk, script)
            if not opts.once:
                kiosk.say("press Ctrl-C to stop everything")
                await stop.wait()
    finally:
        for task in (script, timer):
            task.cancel()
        await asyncio.gather(script, timer, return_exceptions=True)
    return outcome


def _report(kiosk: Kiosk, script: asyncio.Task[None]) -> int:
    exc = script.exception()
    if exc is None:
        return 0
    if isinstance(exc, KioskFailed):
        kiosk.say(f"step failed: {exc}")
    else:
        kiosk.say(f"step failed: {exc!r}")
    return 1


async def _timer(duration: float | None, stop: asyncio.Event) -> None:
    if duration is not None:
        await asyncio.sleep(duration)
        stop.set()


def _banner(opts: DemoOptions, settings: Settings, emu: Emulator, monitor: Monitor) -> None:
    mqtt = settings.mqtt
    where = "a private mosquitto" if opts.private_broker else "the configured broker"
    lines = [
        "tencent2mqtt demo: emulator + broker + bridge + a scripted kiosk",
        f"  broker    {mqtt.url} ({where})",
        f"  emulator  {emu.base_url}",
        f"  metrics   http://{settings.http.listen}/metrics",
        "watch the traffic from another terminal:",
        f"  mosquitto_sub -h {mqtt.host} -p {mqtt.port} -t '{opts.base_topic}/#' -v",
        "or send a request:",
        f"  TENCENT2MQTT_MQTT__URL={mqtt.url} TENCENT2MQTT_MQTT__BASE_TOPIC={opts.base_topic} "
        "tencent2mqtt request ivh/list_sessions",
        "Ctrl-C stops everything.",
        "",
    ]
    for line in lines:
        monitor.echo(click.style(line, bold=True) if opts.color and line[:1] != " " else line)
