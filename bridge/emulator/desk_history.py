"""Chat history of an emulated Desk session (docs/protocol.md B.5 ``describe_chat_messages``).

A session's history is its stream messages (sent by the App administrator: role 3, system) and
the lines the admin API adds (a user's: role 1; an agent's: role 2; the bot's: role 3), ordered
by time. ``Order`` 1 is oldest first, 2 newest first (the default).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.emulator.desk_state import DeskSession, StreamMessage

ROLE_NUMBERS = {"user": 1, "agent": 2, "bot": 3, "system": 3}


@dataclass(frozen=True, kw_only=True)
class ChatLine:
    """A message added through the admin API."""

    role: str  # user, agent or bot
    text: str
    account: str
    at_ms: int


@dataclass(frozen=True, kw_only=True)
class DeskChange:
    """A change the registry made: created, state, message or ended."""

    session: DeskSession
    kind: str
    before: str | None = None


Observer = Callable[[DeskChange], None]


def text_body(text: str) -> list[dict[str, Any]]:
    """A MsgBody of one text element."""
    return [{"MsgType": "TIMTextElem", "MsgContent": {"Text": text}}]


def _line_entry(line: ChatLine) -> dict[str, Any]:
    return {
        "FromAccount": line.account,
        "FromAccountRole": ROLE_NUMBERS[line.role],
        "MsgBody": text_body(line.text),
        "Timestamp": line.at_ms,
    }


def _stream_entry(message: StreamMessage, admin: str) -> dict[str, Any]:
    return {
        "FromAccount": admin,
        "FromAccountRole": 3,
        "MsgKey": message.msg_key,
        "MsgBody": text_body("".join(message.chunks)),
        "Timestamp": message.created_ms,
    }


def history(session: DeskSession, admin: str) -> list[dict[str, Any]]:
    """Every message of the session, oldest first (ties keep insertion order)."""
    entries: Iterable[dict[str, Any]] = [
        *(_stream_entry(m, admin) for m in session.messages),
        *(_line_entry(line) for line in session.lines),
    ]
    return sorted(entries, key=lambda e: int(e["Timestamp"]))


def page(entries: list[dict[str, Any]], *, limit: int, offset: int, order: int) -> list[Any]:
    """One page in the asked order."""
    ordered = entries if order == 1 else entries[::-1]
    return ordered[offset : offset + limit]
