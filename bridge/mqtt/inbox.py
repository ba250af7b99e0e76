"""What the MQTT link receives: `Inbound` messages, handed to an `Inbox` in arrival order.

The link takes each message from paho's `on_message` callback (`from_paho`) and gives it to the
inbox at once: a queue and an iterator between them would cost a task, waits and more loop
passes per message. Only while the inbox is full do messages wait, in order, in an `InboundQueue`.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from typing import Any

from bridge.core.inbound import Inbound, Inbox

log = logging.getLogger(__name__)


class InboundQueue:
    """Hands messages to an inbox as they arrive; while it is full they wait here, in order,
    up to `waiting` of them: past that the inbox refuses each newcomer (it answers it)."""

    def __init__(self, waiting: int) -> None:
        self._max = waiting
        self._waiting: deque[Inbound] = deque()
        self._ordered = 0  # messages waiting that keep their place (`Inbox.keeps_order`)
        self._arrivals = asyncio.Event()
        self.inbox: Inbox | None = None

    def __len__(self) -> int:
        return len(self._waiting)

    def arrived(self, msg: Inbound) -> None:
        """One message, as it is read: to the inbox now, or to the end of the line."""
        inbox = self.inbox
        if inbox is not None and not self._waiting and _offer(inbox, msg):
            return
        keeps = inbox is not None and _keeps_order(inbox, msg)
        if inbox is not None and not keeps and self._full():
            inbox.refuse(msg)
            return
        self._waiting.append(msg)
        self._ordered += keeps
        self._arrivals.set()

    def _full(self) -> bool:
        """Whether a newcomer is refused: `waiting` wait. Behind a message that keeps its place
        a refusal would be judged too early, so it waits too, up to twice as many (past that
        the bound on memory comes first)."""
        limit = 2 * self._max if self._ordered else self._max
        return len(self._waiting) >= limit

    async def pump(self, inbox: Inbox) -> None:
        """Offer what waits, oldest first, as the inbox has room (until cancelled)."""
        while True:
            if not self._waiting:
                self._arrivals.clear()
                await self._arrivals.wait()
                continue
            await inbox.room()
            while self._waiting and _offer(inbox, self._waiting[0]):
                taken = self._waiting.popleft()
                if self._ordered and _keeps_order(inbox, taken):
                    self._ordered -= 1

    def abandon(self) -> int:
        """Forget what still waits (at shutdown); how many that was."""
        count = len(self._waiting)
        self._waiting.clear()
        self._ordered = 0
        return count


def _keeps_order(inbox: Inbox, msg: Inbound) -> bool:
    try:
        return inbox.keeps_order(msg)
    except Exception:
        log.exception("MQTT: cannot judge an inbound message on %s", msg.topic[:200])
        return False


def _offer(inbox: Inbox, msg: Inbound) -> bool:
    try:
        return inbox.offer(msg)
    except Exception:  # logged and passed over: never a stuck line, never into paho's loop
        log.exception("MQTT: cannot take an inbound message on %s", msg.topic[:200])
        return True


def from_paho(message: Any) -> Inbound:
    """A paho `MQTTMessage` as an `Inbound` (its topic property raises on invalid UTF-8)."""
    props = getattr(message, "properties", None)
    return _inbound(message.topic, message.payload, message.retain, message.qos, props)


def _inbound(topic: str, payload: bytes | bytearray, retain: Any, qos: Any, props: Any) -> Inbound:
    return Inbound(
        topic=topic,
        payload=bytes(payload),
        retain=bool(retain),
        qos=int(qos),
        response_topic=getattr(props, "ResponseTopic", None) if props else None,
        correlation_data=getattr(props, "CorrelationData", None) if props else None,
        expiry=getattr(props, "MessageExpiryInterval", None) if props else None,
    )
