"""Agent handover and chat history (docs/topics.md; docs/protocol.md B.5): payloads and replies.

The MQTT side is snake_case with booleans; the upstream body is PascalCase with 0/1 flags
(`bridge.tencent.desk_handover` builds it). Ranges are checked here, before any call.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from bridge.core.actions import Flag, SessionPayload
from bridge.tencent.desk import DeskClient
from bridge.tencent.desk_handover import TRANSFER_FLAGS, TransferRequest

AgentId = Annotated[str, Field(pattern=r"^[A-Za-z0-9@._:-]{1,128}$")]


class TransferToHuman(SessionPayload):
    """`desk/transfer_to_human`: hand the customer to a human agent (B.5)."""

    agent_ids: list[AgentId] = Field(default_factory=list, max_length=100)
    agent_group_id: int | None = Field(default=None, ge=0)
    priority: int | None = Field(default=None, ge=0, le=9)  # B.5: 0-9, 0 the highest
    queue_timeout: int | None = Field(default=None, ge=1, le=86_400)
    send_tip_if_no_agent_online: Flag | None = None
    check_if_during_working_hours: Flag | None = None
    send_prompt_not_during_working_hours: Flag | None = None
    end_session_when_no_member_online: Flag | None = None
    disable_queuing: Flag | None = None
    allow_assign_busy_member: Flag | None = None

    def request(self) -> TransferRequest:
        """The typed upstream request."""
        flags = {
            name: value for name in TRANSFER_FLAGS if (value := getattr(self, name)) is not None
        }
        return TransferRequest(
            session_id=self.session_id,
            agent_ids=tuple(self.agent_ids),
            agent_group_id=self.agent_group_id,
            priority=self.priority,
            queue_timeout=self.queue_timeout,
            flags=flags,
        )


class EndSession(SessionPayload):
    """`desk/end_session`: end a session that was transferred to a human (B.5)."""


class GetMessages(SessionPayload):
    """`desk/get_messages`: one page of a session's chat history (B.5)."""

    limit: int = Field(default=20, ge=1, le=100)
    offset: int = Field(default=0, ge=0)
    order: Literal["oldest_first", "newest_first"] = "newest_first"


async def transfer(client: DeskClient, payload: TransferToHuman) -> dict[str, Any]:
    """Call `transfer_to_human`; the reply names the agent when Tencent assigned one."""
    agent_id = await client.transfer_to_human(payload.request())
    return {"session_id": payload.session_id, "transferred": True, "agent_id": agent_id}


async def messages(client: DeskClient, payload: GetMessages) -> dict[str, Any]:
    """Call `describe_chat_messages`; roles named, times in ISO 8601."""
    total, page = await client.describe_chat_messages(
        payload.session_id, limit=payload.limit, offset=payload.offset, order=payload.order
    )
    return {
        "session_id": payload.session_id,
        "total_count": total,
        "limit": payload.limit,
        "offset": payload.offset,
        "order": payload.order,
        "messages": [m.as_dict() for m in page],
    }
