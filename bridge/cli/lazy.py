"""A click group whose subcommands are imported when they run (click's documented pattern,
"Lazily Loading Subcommands"): `run` does not import the emulator or the demo, and
`--version` or `request` from a script does not import all of them."""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from typing import Any

import click


class LazyGroup(click.Group):
    """`lazy` maps a command name to "module:attribute" of a click command."""

    def __init__(self, *args: Any, lazy: Mapping[str, str], **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._lazy = dict(lazy)

    def list_commands(self, ctx: click.Context) -> list[str]:
        """The eager commands and the lazy ones, sorted (as click lists them)."""
        return sorted({*super().list_commands(ctx), *self._lazy})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command, imported on first use."""
        if cmd_name not in self._lazy:
            return super().get_command(ctx, cmd_name)
        module, _, attribute = self._lazy[cmd_name].partition(":")
        command = getattr(importlib.import_module(module), attribute)
        if not isinstance(command, click.Command):  # a wrong entry in `lazy`: a bug here
            raise TypeError(f"{self._lazy[cmd_name]} is not a click command")
        return command
