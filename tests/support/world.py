"""A bridge running in-process, the emulator behind it and a probe in front of it."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from bridge.app import App
from bridge.emulator import Emulator
from tests.support.bridge import running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe


@dataclass
class World:
    """One bridge (in-process), the emulator behind it and a probe in front of it."""

    app: App
    emu: Emulator
    admin: Admin
    probe: Probe


@contextlib.asynccontextmanager
async def world_of(
    broker: Broker, base: str, *, cloud: dict[str, Any] | None = None, **sections: Any
) -> AsyncIterator[World]:
    """A World on `broker`; `cloud` overrides the emulator's config, `sections` the bridge's."""
    async with emulator(**(cloud or {})) as emu, Admin(emu) as admin:
        settings = settings_for(broker.url, base, **upstream_sections(emu, **sections))
        async with running(settings) as app, Probe(broker.port, base) as probe:
            yield World(app, emu, admin, probe)
