"""The feature protocol: what the composition root runs, registers and asks for health."""

from __future__ import annotations

from typing import Any, Protocol

from bridge.core.inbound import Inbound


class Feature(Protocol):
    """A part of the bridge: its actions are registered, `run()` is a named task."""

    name: str

    async def run(self) -> None:
        """Long-running work (polling, channels); returns only when there is none."""

    async def aclose(self) -> None:
        """Finish in-flight work and release resources (shutdown)."""

    def status(self) -> dict[str, Any]:
        """This feature's part of `bridge/health`."""


class Hooks(Protocol):
    """Optional extras of a feature, found by `hooks_of`: topics of its own and a start step."""

    def subscriptions(self) -> list[str]:
        """Topic filters beyond the command topics."""

    def handles(self, msg: Inbound) -> bool:
        """Take `msg` (one of its own subscriptions) and return True, else False."""

    def start(self) -> None:
        """Publish what it owns once the bridge starts (discovery documents, ...)."""


def subscriptions_of(feature: object) -> list[str]:
    """The feature's own subscriptions, if it has any."""
    fn = getattr(feature, "subscriptions", None)
    return list(fn()) if callable(fn) else []


def handler_of(feature: object) -> Any:
    """The feature's `handles(msg)`, or None."""
    fn = getattr(feature, "handles", None)
    return fn if callable(fn) else None
