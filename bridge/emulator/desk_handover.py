"""``transfer_to_human`` and ``describe_chat_messages`` (docs/protocol.md B.5) in the emulator.

A transfer moves the session to Queuing at once; what follows is set by the admin API
(``POST /emulator/desk/handover``): ``agent`` or ``waiting_for_agent`` (an agent is assigned,
after ``after_ms``), ``queuing`` (it stays queued) or ``no_agent`` (the transfer fails: back to
Chatbot, or ended with ``EndSessionWhenNoMemberOnline: 1``). The answer's ``AgentId`` is filled
when the agent was assigned before answering (``after_ms`` 0).

Errors: 60003 bad JSON; 141004 a bad field (``Priority`` outside 0-9, a flag not 0/1, an
``AgentIdList`` that is not a list of strings, ``Limit`` outside 1-100, ``Order`` not 1/2) or a
session already transferred; 141005 unknown or ended session.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from bridge.emulator import fields
from bridge.emulator.desk_history import history, page
from bridge.emulator.desk_state import DEFAULT_AGENT, DeskSession

if TYPE_CHECKING:
    from bridge.emulator.state import EmulatorState

Outcome = Literal["agent", "waiting_for_agent", "queuing", "no_agent"]
FLAGS = (
    "SendTipIfNoAgentOnline",
    "CheckIfDuringWorkingHours",
    "SendPromptNotDuringWorkingHours",
    "EndSessionWhenNoMemberOnline",
    "DisableQueuing",
    "AllowAssignBusyMember",
)
TRANSFERRED = frozenset({"queuing", "waiting_for_agent", "agent"})


@dataclass(kw_only=True)
class Handover:
    """What a transfer leads to (set through the admin API)."""

    outcome: Outcome = "agent"
    agent_id: str = DEFAULT_AGENT
    after_ms: int = 0


@dataclass(frozen=True, kw_only=True)
class TransferAsk:
    """A checked ``transfer_to_human`` body."""

    session_id: str
    agent_ids: list[str]
    end_if_no_agent: bool


def parse_transfer(body: dict[str, Any]) -> TransferAsk:
    """Check every documented field (FieldError on the first bad one)."""
    session_id = fields.text(body, "SessionId", required=True)
    agents = body.get("AgentIdList", [])
    if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
        raise fields.FieldError("AgentIdList", "must be a list of agent ids")
    fields.integer(body, "Priority", default=0, low=0, high=9)
    fields.integer(body, "QueueTimeout", default=0, low=0)
    fields.integer(body, "AgentGroupId", default=0, low=0)
    flags = {name: fields.integer(body, name, default=0, low=0, high=1) for name in FLAGS}
    return TransferAsk(
        session_id=session_id,
        agent_ids=list(agents),
        end_if_no_agent=flags["EndSessionWhenNoMemberOnline"] == 1,
    )


def transfer(state: EmulatorState, session: DeskSession, ask: TransferAsk) -> str:
    """Queue the session, then move it as the handover says; the AgentId assigned by now."""
    plan = state.handover
    agent = ask.agent_ids[0] if ask.agent_ids else plan.agent_id
    session.transferred = True
    state.desk.set_state(session, state="queuing")
    if plan.after_ms <= 0:
        conclude(state, session, plan, agent, ask.end_if_no_agent)
    else:
        later = _later(state, session, plan, agent, ask.end_if_no_agent)
        state.tasks.spawn(later, f"desk-handover:{session.session_id}")
    return session.agent_id if session.state in ("agent", "waiting_for_agent") else ""


async def _later(
    state: EmulatorState, session: DeskSession, plan: Handover, agent: str, end: bool
) -> None:
    await asyncio.sleep(plan.after_ms / 1000)
    if session.session_id in state.desk.live and session.state == "queuing":
        conclude(state, session, plan, agent, end)


def conclude(
    state: EmulatorState, session: DeskSession, plan: Handover, agent: str, end: bool
) -> None:
    """The transfer's outcome: an agent, still queued, or no agent online."""
    if plan.outcome in ("agent", "waiting_for_agent"):
        state.desk.set_state(session, state=plan.outcome, agent_id=agent)
    elif plan.outcome == "no_agent":
        session.transferred = False
        if end:
            state.desk.end(session)
        else:
            state.desk.set_state(session, state="chatbot", agent_id="")


def describe(session: DeskSession, body: dict[str, Any], admin: str) -> dict[str, Any]:
    """One page of the session's history with ``TotalCount``."""
    limit = fields.integer(body, "Limit", default=20, low=1, high=100)
    offset = fields.integer(body, "Offset", default=0, low=0)
    order = fields.integer(body, "Order", default=2, low=1, high=2)
    entries = history(session, admin)
    return {
        "TotalCount": len(entries),
        "Messages": page(entries, limit=limit, offset=offset, order=order),
    }
