"""What the bridge receives: `Inbound` messages, and the `Inbox` that takes them in order.

The MQTT link (`bridge.mqtt.inbox`) builds them; the dispatcher and the features read them,
without knowing the MQTT library.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Inbound:
    """One message the bridge received, with the MQTT 5 properties it cares about."""

    topic: str
    payload: bytes
    retain: bool = False
    qos: int = 0
    response_topic: str | None = None
    correlation_data: bytes | None = None
    expiry: int | None = None
    received_at: float = field(default_factory=time.monotonic)


class Inbox(Protocol):
    """Where the link delivers inbound messages, in arrival order."""

    def offer(self, msg: Inbound) -> bool:
        """Take `msg` now, or return False while full: the link then awaits `room()` and
        offers the same message again, before any that arrived after it."""

    async def room(self) -> None:
        """Return once `offer` may take a message again."""

    def refuse(self, msg: Inbound) -> None:
        """Answer `msg` without running it: too many already wait."""

    def keeps_order(self, msg: Inbound) -> bool:
        """Whether `msg` must keep its place in line (a cluster's membership): it waits even
        when too many wait, and what comes after it waits too instead of being refused, since
        a refusal is judged by the membership applied so far."""
