"""``tencent2mqtt emulator``: run the local Tencent Cloud emulator until SIGINT or SIGTERM.

Its first stdout line is one JSON object with the URLs and credentials (docs/emulator.md); then come
``export TENCENT2MQTT_...`` lines for a shell. Credentials not given are generated.
"""

from __future__ import annotations

import asyncio
import json
import logging
import shlex
import signal
import sys
from typing import Any

import click

from bridge.emulator.config import DESK_SPELLINGS, EmulatorConfig
from bridge.emulator.server import Emulator
from bridge.ops.gctune import tune_gc

logger = logging.getLogger(__name__)

LOG_LEVELS = ("debug", "info", "warning", "error")


def env_settings(info: dict[str, Any]) -> dict[str, str]:
    """The bridge's environment settings matching an emulator's ``info()``."""
    return {
        "TENCENT2MQTT_IVH__BASE_URL": info["ivh_base_url"],
        "TENCENT2MQTT_IVH__APPKEY": info["appkey"],
        "TENCENT2MQTT_IVH__ACCESS_TOKEN": info["access_token"],
        "TENCENT2MQTT_IVH__CHANNEL__URL": info["ivh_channel_url"],
        "TENCENT2MQTT_DESK__BASE_URL": info["desk_base_url"],
        "TENCENT2MQTT_DESK__SDKAPPID": str(info["sdkappid"]),
        "TENCENT2MQTT_DESK__IDENTIFIER": info["identifier"],
        "TENCENT2MQTT_DESK__SECRET_KEY": info["secret_key"],
    }


def _announce(emulator: Emulator) -> None:
    info = emulator.info()
    click.echo(json.dumps(info))
    sys.stdout.flush()
    click.echo(f"# tencent2mqtt emulator listening on {emulator.base_url}")
    click.echo("# point a bridge at it with:")
    for name, value in env_settings(info).items():
        click.echo(f"export {name}={shlex.quote(value)}")
    click.echo(f"# admin API: {emulator.base_url}/emulator/state ; stop with Ctrl-C")
    sys.stdout.flush()


async def _serve(config: EmulatorConfig) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    signals = (signal.SIGINT, signal.SIGTERM)
    for sig in signals:
        loop.add_signal_handler(sig, stop.set)
    try:
        async with Emulator(config) as emulator:
            tune_gc()
            _announce(emulator)
            await stop.wait()
            logger.info("stopping on signal")
    finally:
        for sig in signals:
            loop.remove_signal_handler(sig)


def _configure_logging(level: str) -> None:
    if not logging.getLogger().handlers:
        logging.basicConfig(
            stream=sys.stderr, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
        )
    logging.getLogger("bridge.emulator").setLevel(level.upper())


@click.command("emulator")
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to bind.")
@click.option(
    "--port", default=8080, show_default=True, type=click.IntRange(0, 65535), help="0: any free."
)
@click.option("--appkey", help="IVH appkey (generated when absent).")
@click.option("--access-token", help="IVH access token (generated when absent).")
@click.option("--sdkappid", type=click.IntRange(1), help="Desk SDKAppID (generated when absent).")
@click.option("--identifier", default="administrator", show_default=True, help="Desk admin.")
@click.option("--secret-key", help="Desk UserSig secret key (generated when absent).")
@click.option("--prepare-delay", type=click.FloatRange(0), default=1.0, show_default=True)
@click.option("--speak-delay", type=click.FloatRange(0), default=0.2, show_default=True)
@click.option("--desk-spelling", type=click.Choice(DESK_SPELLINGS), default="zh", show_default=True)
@click.option("--ws-idle-timeout", type=click.FloatRange(0, min_open=True), default=180.0)
@click.option("--session-idle-timeout", type=click.FloatRange(0, min_open=True), default=600.0)
@click.option(
    "--desk-callback", help="URL to POST Desk session events to (Desk.SessionEventNotify)."
)
@click.option("--log-level", type=click.Choice(LOG_LEVELS), default="info", show_default=True)
def emulator_command(log_level: str, **options: Any) -> None:
    """Run the local Tencent Cloud emulator (IVH + Desk) until interrupted."""
    _configure_logging(log_level)
    try:
        config = EmulatorConfig.generate(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from exc
    try:
        asyncio.run(_serve(config))
    except BrokenPipeError:  # our stdout was closed (e.g. piped into `head`): nothing to say
        sys.exit(0)
    except OSError as exc:
        raise click.ClickException(f"cannot listen on {config.host}:{config.port}: {exc}") from exc
