"""The demo's live view of the MQTT traffic: one coloured line per message, kept for the kiosk."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import click

from bridge.core import jsontext
from bridge.core.inbound import Inbound
from bridge.core.topics import SHORTHANDS
from bridge.mqtt.toolclient import ToolClient

COLOURS = {"request": "cyan", "response": "green", "event": "magenta", "state": "yellow"}
MAX_PAYLOAD = 220


@dataclass(frozen=True, slots=True)
class Seen:
    """One message as the monitor saw it."""

    topic: str
    kind: str
    data: Any


def kind_of(base: str, topic: str) -> str:
    """`request`, `response`, `event` or `state`, from the topic alone."""
    rest = topic[len(base) + 1 :].split("/")
    if rest[:2] == ["bridge", "request"]:
        return "request"
    if rest[:2] in (["bridge", "response"], ["bridge", "client"]):
        return "response"
    if rest[-1] == "event":
        return "event"
    if len(rest) == 3 and rest[2] in SHORTHANDS.get(rest[0], {}):
        return "request"
    return "state"


def decode(payload: bytes) -> Any:
    """JSON when it is JSON, else the text."""
    text = payload.decode("utf-8", errors="replace")
    try:
        return jsontext.loads(text)
    except ValueError:
        return text


class Monitor:
    """Prints every message under the base topic and lets the kiosk wait for one."""

    def __init__(self, client: ToolClient, base: str, *, color: bool) -> None:
        self._client = client
        self._base = base
        self._color = color
        self.seen: list[Seen] = []
        self._changed = asyncio.Condition()

    async def subscribe(self) -> None:
        """Subscribe to everything under the base topic (before the bridge starts)."""
        await self._client.subscribe(f"{self._base}/#")

    async def run(self) -> None:
        """Print every message until cancelled."""
        async for msg in self._client.messages():
            await self._record(msg)

    async def _record(self, msg: Inbound) -> None:
        seen = Seen(msg.topic, kind_of(self._base, msg.topic), decode(msg.payload))
        self.echo(self.line(seen, msg.payload, retained=msg.retain))
        async with self._changed:
            self.seen.append(seen)
            self._changed.notify_all()

    def line(self, seen: Seen, payload: bytes, *, retained: bool) -> str:
        """`12:00:01.234 state    topic payload`, coloured by kind."""
        empty = "(cleared)" if seen.kind == "state" else "(empty)"
        text = payload.decode("utf-8", errors="replace") if payload else empty
        if payload and seen.topic.endswith("/audio"):  # bytes, not text (docs/topics.md)
            text = f"({len(payload):,} bytes of audio)"
        if len(text) > MAX_PAYLOAD:
            text = text[: MAX_PAYLOAD - 1] + "…"
        stamp = time.strftime("%H:%M:%S")
        label = f"{seen.kind:<8}"
        failed = isinstance(seen.data, dict) and seen.data.get("status") == "error"
        colour = "red" if failed else COLOURS[seen.kind]
        topic = seen.topic + (" (retained)" if retained else "")
        if self._color:
            label = click.style(label, fg=colour, bold=True)
            topic = click.style(topic, fg=colour)
        return f"{stamp} {label} {topic} {text}"

    def echo(self, line: str) -> None:
        """Print one line now."""
        click.echo(line, color=self._color or None)

    def mark(self) -> int:
        """A position to wait from."""
        return len(self.seen)

    async def wait_for(self, topic: str, check: Callable[[Any], bool], *, since: int = 0) -> Any:
        """The first JSON payload on `<base>/<topic>` (from `since`) that passes `check`."""
        full = f"{self._base}/{topic}"

        def find() -> Seen | None:
            for seen in self.seen[since:]:
                if seen.topic == full and isinstance(seen.data, dict) and check(seen.data):
                    return seen
            return None

        async with self._changed:
            await self._changed.wait_for(lambda: find() is not None)
        found = find()
        assert found is not None
        return found.data
