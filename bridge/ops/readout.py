"""What the HTTP endpoint and the metrics read from the running bridge, as callbacks."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from starlette.types import ASGIApp


@dataclass(frozen=True, kw_only=True)
class Readout:
    """Registered by the composition root; ops never holds the `App` itself."""

    snapshot: Callable[[], dict[str, Any]]  # the `bridge/health` body
    outcomes: Callable[[], Mapping[tuple[str, str], int]]  # (action, outcome) -> count
    services: Callable[[], list[str]]  # the enabled upstream services
    # Features' own HTTP endpoints: exact path -> ASGI app (the Desk callback).
    endpoints: Callable[[], Mapping[str, ASGIApp]] = dict
    # Makes a real upstream call for each service with nothing else to judge it by (/readyz).
    verify: Callable[[], Awaitable[None]]

    def mqtt_connected(self) -> bool:
        """Whether the MQTT link is up now."""
        return bool(self.snapshot()["mqtt"]["connected"])
