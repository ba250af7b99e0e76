"""The command group: every command is listed and runs; `run` imports neither the emulator nor
the demo (a bridge on a kiosk does not carry them in memory)."""

from __future__ import annotations

import subprocess
import sys

import click
import pytest
from click.testing import CliRunner

from bridge.cli.lazy import LazyGroup
from bridge.cli.main import main

COMMANDS = ["check-config", "demo", "emulator", "request", "run", "topics"]


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    listed = [line.split()[0] for line in result.output.split("Commands:")[1].splitlines() if line]
    assert listed == COMMANDS


@pytest.mark.parametrize("name", COMMANDS)
def test_each_command_loads(name: str) -> None:
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert f"Usage: main {name}" in result.output


def test_the_bridge_does_not_import_the_emulator_or_the_demo() -> None:
    probe = (
        "import sys, bridge.cli.main, bridge.app;"
        "print(sorted(m for m in sys.modules"
        " if m.startswith(('bridge.emulator', 'bridge.cli.demo'))))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_an_entry_that_is_not_a_command_is_refused() -> None:
    group = LazyGroup(lazy={"odd": "bridge.cli.lazy:LazyGroup"})
    with pytest.raises(TypeError, match="not a click command"):
        group.get_command(click.Context(group), "odd")


def test_an_unknown_command_is_a_usage_error() -> None:
    result = CliRunner().invoke(main, ["nonsense"])
    assert result.exit_code == 2
    assert "No such command 'nonsense'" in result.output
