"""`tencent2mqtt demo`: the command."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import click

from bridge.cli.common import config_option, load_or_exit
from bridge.cli.demo.runner import DemoOptions, can_start_mosquitto, run_demo
from bridge.ops import logs


@click.command("demo")
@config_option
@click.option("--duration", type=click.FloatRange(0, min_open=True), help="Stop after N seconds.")
@click.option("--once", is_flag=True, help="Stop when the kiosk script is done.")
@click.option(
    "--pace",
    type=click.FloatRange(0),
    default=1.5,
    show_default=True,
    help="Seconds between the kiosk's steps.",
)
@click.option("--no-color", is_flag=True, help="Plain output.")
@click.option(
    "--base-topic",
    help="Base topic (default: tencent2mqtt; tencent2mqtt-demo on a configured broker, "
    "so it never mixes with a real bridge).",
)
@click.option(
    "--log-level",
    type=click.Choice(["debug", "info", "warning", "error"]),
    default="warning",
    show_default=True,
    help="The bridge's log level (stderr).",
)
def demo_command(
    config_path: Path | None,
    duration: float | None,
    once: bool,
    pace: float,
    no_color: bool,
    base_topic: str | None,
    log_level: str,
) -> None:
    """Emulator + broker + bridge + a scripted kiosk, with the MQTT traffic live.

    Uses a private mosquitto on a free port when mosquitto is installed, else the broker of
    the config. Nothing else is needed: the emulator stands in for Tencent Cloud.
    """
    settings = load_or_exit(config_path)
    logs.configure(log_level, "text", settings.secrets())
    private = can_start_mosquitto()
    if not private:
        click.echo(f"mosquitto is not installed: using the broker at {settings.mqtt.url}", err=True)
    options = DemoOptions(
        settings=settings,
        private_broker=private,
        base_topic=base_topic or ("tencent2mqtt" if private else "tencent2mqtt-demo"),
        duration=duration,
        once=once,
        pace=pace,
        color=not no_color and sys.stdout.isatty(),
    )
    try:
        code = asyncio.run(run_demo(options))
    except KeyboardInterrupt:  # Ctrl-C before the demo's own handler was installed
        code = 0
    sys.exit(code)
