"""What the command-line modules share: the `--config` option and loading the config."""

from __future__ import annotations

import sys
from pathlib import Path

import click

from bridge.config import ConfigError, Settings, load_settings

config_option = click.option(
    "--config",
    "-c",
    "config_path",
    type=click.Path(dir_okay=False, path_type=Path),
    default=None,
    help="TOML config file (default: $TENCENT2MQTT_CONFIG); "
    "TENCENT2MQTT_<SECTION>__<KEY> variables override it.",
)


def load_or_exit(path: Path | None) -> Settings:
    """Load the config, or print one line per problem and exit 2."""
    try:
        return load_settings(path)
    except ConfigError as exc:
        click.echo("invalid configuration:", err=True)
        for line in exc.problems:
            click.echo(f"  {line}", err=True)
        sys.exit(2)
