"""The command line (README.md). Logging is configured here and nowhere else."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
import sys
from pathlib import Path
from typing import Any

import click

from bridge import __version__
from bridge.cli.common import config_option, load_or_exit
from bridge.cli.lazy import LazyGroup
from bridge.config import Settings, config_warnings
from bridge.ops import logs
from bridge.ops.gctune import tune_gc
from bridge.ops.listen import ListenError

log = logging.getLogger("bridge")
EXIT_CANNOT_START = 1  # the config is valid (else 2) but this host cannot run it now


@click.group(
    cls=LazyGroup,
    lazy={
        "demo": "bridge.cli.demo.cli:demo_command",
        "emulator": "bridge.emulator.cli:emulator_command",
        "request": "bridge.cli.tools:request_command",
        "topics": "bridge.cli.tools:topics_command",
    },
    context_settings={"help_option_names": ["-h", "--help"]},
)
@click.version_option(__version__, prog_name="tencent2mqtt")
def main() -> None:
    """tencent2mqtt: drive Tencent Cloud Digital Human and Contact Center sessions over MQTT."""


@main.command()
@config_option
def run(config_path: Path | None) -> None:
    """Run the bridge until SIGINT or SIGTERM."""
    settings = load_or_exit(config_path)
    logs.configure(settings.log.level, settings.log.format, settings.secrets())
    for warning in config_warnings(settings):
        log.warning("%s", warning)
    try:
        asyncio.run(_serve(settings))
    except ListenError as exc:
        log.error("cannot start: %s", exc)
        sys.exit(EXIT_CANNOT_START)


async def _serve(settings: Settings) -> None:
    from bridge.app import App

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    app = App(settings)
    tune_gc()
    log.info(
        "tencent2mqtt %s: broker %s, base topic %s, services %s",
        __version__,
        settings.mqtt.url,
        settings.mqtt.base_topic,
        ", ".join(app.services) or "none",
    )
    await app.run(stop)
    log.info("stopped")


@main.command("check-config")
@config_option
def check_config(config_path: Path | None) -> None:
    """Validate the config and print it, secrets redacted; exit 2 when invalid."""
    settings = load_or_exit(config_path)
    click.echo(to_toml(settings.redacted()), nl=False)
    for name, section in (("ivh", settings.ivh), ("desk", settings.desk)):
        reason = section.disabled_reason
        click.echo(f"# {name}: {'enabled' if reason is None else f'disabled: {reason}'}")
    for warning in config_warnings(settings):
        click.echo(f"# warning: {warning}")


def to_toml(data: dict[str, Any], prefix: str = "") -> str:
    """Render nested config data as TOML (scalars and lists; tables for sections)."""
    scalars = [(k, v) for k, v in data.items() if not isinstance(v, dict)]
    tables = [(k, v) for k, v in data.items() if isinstance(v, dict)]
    out = f"[{prefix}]\n" if prefix and scalars else ""
    for key, value in scalars:
        if value is not None:
            out += f"{key} = {json.dumps(value, ensure_ascii=False)}\n"
        else:
            out += f"# {key} = (unset)\n"
    for key, value in tables:
        name = f"{prefix}.{key}" if prefix else key
        out += ("\n" if out else "") + to_toml(value, name)
    return out
