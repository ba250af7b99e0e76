"""What every feature is built from; the composition root (`bridge.app`) makes it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.config import Settings
from bridge.core.envelope import Emitter, Publisher
from bridge.core.membership import Membership
from bridge.core.observe import CallObserver
from bridge.core.ownership import Ownership
from bridge.core.topics import Topics
from bridge.tencent.retry import RetryPolicy
from bridge.tencent.session import HttpSession


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
    http_client: Callable[[float], HttpSession]
    # IVH session state changes, `(before, after)`: the IVH feature calls each, extensions
    # (Home Assistant) add themselves when built.
    session_changes: list[Callable[[Any, Any], None]] = field(default_factory=list)
    # Desk sessions watched (True) or no longer (False), `(session_id, watched)`: the Desk
    # feature calls each, Home Assistant adds itself.
    desk_watches: list[Callable[[str, bool], None]] = field(default_factory=list)
    # The cluster membership (docs/scale-out.md), None for a lone instance.
    membership: Membership | None = None
