"""What every feature is built from; the composition root (`bridge.app`) makes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import httpx

from bridge.config import Settings
from bridge.core.envelope import Emitter, Publisher
from bridge.core.observe import CallObserver
from bridge.core.ownership import Ownership
from bridge.core.topics import Topics
from bridge.tencent.retry import RetryPolicy


@dataclass(frozen=True, kw_only=True)
class Deps:
    """The shared parts a feature needs; features never reach for the `App`."""

    settings: Settings
    topics: Topics
    publisher: Publisher
    emitter: Emitter
    observe_call: CallObserver
    link_connected: asyncio.Event
    ownership: Ownership
    retry: RetryPolicy
    http_client: Callable[[float], httpx.AsyncClient]
    # IVH session state changes, `(before, after)`: the IVH feature calls each, extensions
    # (Home Assistant) add themselves when built.
    session_changes: list[Callable[[Any, Any], None]] = field(default_factory=list)
