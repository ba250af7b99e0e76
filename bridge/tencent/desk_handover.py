"""Typed bodies and results of the Desk handover and history calls (docs/protocol.md B.5).

`transfer_to_human` takes 0/1 integers for its flags and `Priority` 0-9 (0 highest);
`describe_chat_messages` takes `Limit` (<= 100), `Offset` and `Order` (1 oldest first, 2 newest
first) and answers `TotalCount` and `Messages[]` with `FromAccount`, `FromAccountRole` (1 user,
2 agent, 3 system), `MsgBody` and `Timestamp` in milliseconds.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from bridge.tencent.models import as_int

Order = Literal["oldest_first", "newest_first"]
ORDER_CODES: Mapping[Order, int] = {"oldest_first": 1, "newest_first": 2}
ROLE_NAMES: Mapping[int, str] = {1: "user", 2: "agent", 3: "system"}

# snake_case option -> the B.5 body field it sets to 0/1.
TRANSFER_FLAGS: Mapping[str, str] = {
    "send_tip_if_no_agent_online": "SendTipIfNoAgentOnline",
    "check_if_during_working_hours": "CheckIfDuringWorkingHours",
    "send_prompt_not_during_working_hours": "SendPromptNotDuringWorkingHours",
    "end_session_when_no_member_online": "EndSessionWhenNoMemberOnline",
    "disable_queuing": "DisableQueuing",
    "allow_assign_busy_member": "AllowAssignBusyMember",
}


@dataclass(frozen=True, kw_only=True)
class TransferRequest:
    """What `transfer_to_human` is asked; None leaves a field to Tencent's default."""

    session_id: str
    agent_ids: Sequence[str] = ()
    agent_group_id: int | None = None
    priority: int | None = None
    queue_timeout: int | None = None
    flags: Mapping[str, bool] = field(default_factory=dict)

    def body(self) -> dict[str, Any]:
        """The B.5 body; flags as 0/1."""
        body: dict[str, Any] = {"SessionId": self.session_id}
        if self.agent_ids:
            body["AgentIdList"] = list(self.agent_ids)
        for name, value in (
            ("AgentGroupId", self.agent_group_id),
            ("Priority", self.priority),
            ("QueueTimeout", self.queue_timeout),
        ):
            if value is not None:
                body[name] = value
        for option, value in self.flags.items():
            body[TRANSFER_FLAGS[option]] = 1 if value else 0
        return body


@dataclass(frozen=True, kw_only=True)
class ChatMessage:
    """One message of a session's history, with the role named and the time in ISO 8601."""

    from_account: str | None
    role: str
    text: str
    time: str | None
    timestamp_ms: int | None
    msg_body: list[Any]

    def as_dict(self) -> dict[str, Any]:
        """The message as the MQTT reply carries it."""
        return {
            "from_account": self.from_account,
            "role": self.role,
            "text": self.text,
            "time": self.time,
            "timestamp_ms": self.timestamp_ms,
            "msg_body": self.msg_body,
        }


def chat_message(raw: Mapping[str, Any]) -> ChatMessage:
    """A B.5 `Messages[]` entry, typed; an unknown role number is `unknown`."""
    body = raw.get("MsgBody")
    elements = list(body) if isinstance(body, list) else []
    stamp = as_int(raw.get("Timestamp"))
    account = raw.get("FromAccount")
    return ChatMessage(
        from_account=account if isinstance(account, str) else None,
        role=ROLE_NAMES.get(as_int(raw.get("FromAccountRole")) or 0, "unknown"),
        text=message_text(elements),
        time=iso_ms(stamp),
        timestamp_ms=stamp,
        msg_body=elements,
    )


def message_text(elements: Sequence[Any]) -> str:
    """The text of every `TIMTextElem` of a MsgBody, joined (other element types are skipped)."""
    parts = []
    for element in elements:
        if isinstance(element, Mapping) and element.get("MsgType") == "TIMTextElem":
            content = element.get("MsgContent")
            text = content.get("Text") if isinstance(content, Mapping) else None
            if isinstance(text, str):
                parts.append(text)
    return "".join(parts)


def iso_ms(stamp: int | None) -> str | None:
    """Milliseconds since the epoch as ISO 8601 UTC; None stays None, and so does a stamp no
    date can hold (negative, or past year 9999: one bad time must not fail a whole page)."""
    if stamp is None or stamp < 0:
        return None
    try:
        moment = datetime.fromtimestamp(stamp / 1000, tz=UTC)
    except (ValueError, OverflowError, OSError):
        return None
    return moment.isoformat(timespec="milliseconds").replace("+00:00", "Z")
