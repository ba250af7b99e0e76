"""What the HTTP endpoint and the metrics read from the running bridge, as callbacks."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True, kw_only=True)
class Readout:
    """Registered by the composition root; ops never holds the `App` itself."""

    snapshot: Callable[[], dict[str, Any]]  # the `bridge/health` body
    outcomes: Callable[[], Mapping[tuple[str, str], int]]  # (action, outcome) -> count
    services: Callable[[], list[str]]  # the enabled upstream services

    def mqtt_connected(self) -> bool:
        """Whether the MQTT link is up now."""
        return bool(self.snapshot()["mqtt"]["connected"])
