"""The bridge's own feature: `bridge/health_check`, retained `bridge/info` and `bridge/health`."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

from bridge import __version__
from bridge.config import Settings
from bridge.core.actions import Empty, action
from bridge.core.envelope import Publisher, dumps, now_iso
from bridge.core.topics import Topics

Snapshot = Callable[[], dict[str, Any]]


class BridgeFeature:
    """Publishes info once per connect and health periodically; answers health checks."""

    name = "bridge"

    def __init__(
        self, *, settings: Settings, topics: Topics, publisher: Publisher, snapshot: Snapshot
    ) -> None:
        self._settings = settings
        self._topics = topics
        self._publisher = publisher
        self._snapshot = snapshot
        self._started = time.monotonic()
        self._started_at = now_iso()

    def info(self, services: list[str]) -> dict[str, Any]:
        """Version, services, protocol and the effective config with secrets redacted."""
        return {
            "version": __version__,
            "services": services,
            "mqtt_protocol": "5" if self._settings.mqtt.protocol == 5 else "3.1.1",
            "base_topic": self._topics.base,
            "started_at": self._started_at,
            "config": self._settings.redacted(),
        }

    def publish_info(self, services: list[str]) -> None:
        """Retain `bridge/info`."""
        self._publisher.set_retained(self._topics.info, dumps(self.info(services)))

    def health(self) -> dict[str, Any]:
        """The current health document."""
        return {
            "ts": now_iso(),
            "uptime_s": round(time.monotonic() - self._started, 1),
            **self._snapshot(),
        }

    def publish_health(self) -> None:
        """Retain `bridge/health` now."""
        self._publisher.set_retained(self._topics.health, dumps(self.health()))

    async def run(self) -> None:
        """Publish health every `bridge.health_interval` seconds."""
        while True:
            self.publish_health()
            await asyncio.sleep(self._settings.bridge.health_interval)

    async def aclose(self) -> None:
        """Nothing to release."""

    @action("bridge/health_check")
    async def health_check(self, payload: Empty) -> dict[str, Any]:
        """Report the bridge's health now."""
        return self.health()
