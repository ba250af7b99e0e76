"""Desk sessions in memory: canonical state, its upstream spellings (docs/protocol.md B.3), stream
messages.

States are stored canonically (``not_in_session``, ``chatbot``, ``waiting_for_agent``,
``queuing``, ``agent``) or as a literal upstream string (``raw_state``). ``get_session_state``
spells them as the zh doc (``desk_spelling="zh"``: NotInSession, Queueing), the EN doc
(``"en"``: "Not in session", Queuing) or alternately (``"mixed"``), since B.3 shows both.
"""

from __future__ import annotations

import secrets
import time
import uuid
from collections import OrderedDict, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.emulator.config import EmulatorConfig
from bridge.emulator.desk_history import ChatLine, DeskChange, Observer

CANONICAL_STATES = ("not_in_session", "chatbot", "waiting_for_agent", "queuing", "agent")
AGENT_STATES = frozenset({"waiting_for_agent", "agent"})
SPELLINGS = {
    "zh": {
        "not_in_session": "NotInSession",
        "chatbot": "Chatbot",
        "waiting_for_agent": "WaitingForAgentAnswering",
        "queuing": "Queueing",
        "agent": "Agent",
    },
    "en": {
        "not_in_session": "Not in session",
        "chatbot": "Chatbot",
        "waiting_for_agent": "WaitingForAgentAnswering",
        "queuing": "Queuing",
        "agent": "Agent",
    },
}
DEFAULT_AGENT = "agent001@emulator.invalid"
DEFAULT_CUSTOMER_SERVICE = "@customer_service_account"
_MESSAGES_PER_SESSION = 200
_MESSAGE_TEXT_CAP = 1024 * 1024


@dataclass(eq=False, kw_only=True)
class StreamMessage:
    """One ``send_stream_msg`` message (B.4): its MsgKey and the chunks received in order."""

    msg_key: str
    session_id: str
    chunks: list[str] = field(default_factory=list)
    calls: int = 0
    finished: bool = False
    size: int = 0
    truncated: bool = False
    cloud_custom_data: str = ""
    created_ms: int = 0

    def add(self, chunk: str, *, finish: bool, custom: str) -> None:
        """Record one call's chunk (text beyond 1 MiB is counted, not kept)."""
        self.calls += 1
        self.finished = finish
        self.cloud_custom_data = custom or self.cloud_custom_data
        if self.size + len(chunk) > _MESSAGE_TEXT_CAP:
            self.truncated = True
            return
        self.chunks.append(chunk)
        self.size += len(chunk)

    def view(self) -> dict[str, Any]:
        """The message as the admin API shows it."""
        return {
            "msg_key": self.msg_key,
            "session_id": self.session_id,
            "chunks": list(self.chunks),
            "calls": self.calls,
            "finished": self.finished,
            "text": "".join(self.chunks),
            "truncated": self.truncated,
            "cloud_custom_data": self.cloud_custom_data,
        }


@dataclass(eq=False, kw_only=True)
class DeskSession:
    """One contact-center session."""

    session_id: str
    state: str = "chatbot"
    raw_state: str | None = None
    agent_id: str = ""
    client_user_id: str = ""
    customer_service_id: str = DEFAULT_CUSTOMER_SERVICE
    ended: bool = False
    transferred: bool = False  # end_session is refused until a transfer_to_human (B.5)
    messages: deque[StreamMessage] = field(default_factory=deque)
    lines: deque[ChatLine] = field(default_factory=deque)  # messages the admin API added

    def view(self) -> dict[str, Any]:
        """The session as the admin API shows it."""
        return {
            "session_id": self.session_id,
            "state": self.state,
            "raw_state": self.raw_state,
            "agent_id": self.agent_id,
            "client_user_id": self.client_user_id,
            "customer_service_id": self.customer_service_id,
            "ended": self.ended,
            "transferred": self.transferred,
            "messages": len(self.messages),
            "chat_lines": len(self.lines),
        }


class DeskRegistry:
    """Live Desk sessions (by id and by user), recently ended ones, and stream messages."""

    def __init__(self, config: EmulatorConfig, wall: Callable[[], float] = time.time) -> None:
        self.config = config
        self._wall = wall
        self.live: dict[str, DeskSession] = {}
        self.ended: OrderedDict[str, DeskSession] = OrderedDict()
        self._by_user: dict[tuple[str, str], str] = {}
        self._messages: dict[str, StreamMessage] = {}
        self._serial = 0
        self._calls = 0
        self.observers: list[Observer] = []  # told of every change (the callback sender)

    def _notify(self, session: DeskSession, kind: str, before: str | None = None) -> None:
        change = DeskChange(session=session, kind=kind, before=before)
        for observer in self.observers:
            observer(change)

    def create(
        self,
        *,
        session_id: str | None = None,
        state: str = "chatbot",
        raw_state: str | None = None,
        agent_id: str | None = None,
        client_user_id: str | None = None,
        customer_service_id: str | None = None,
    ) -> DeskSession:
        """A new live session; ValueError when the id is live already or the table is full."""
        sid = session_id or str(uuid.uuid4())
        if sid in self.live:
            raise ValueError(f"Desk session {sid} exists already")
        if len(self.live) >= self.config.max_desk_sessions:
            raise ValueError("too many Desk sessions")
        self._serial += 1
        session = DeskSession(
            session_id=sid,
            client_user_id=client_user_id or f"user{self._serial}",
            customer_service_id=customer_service_id or DEFAULT_CUSTOMER_SERVICE,
        )
        self.set_state(session, state=state, raw_state=raw_state, agent_id=agent_id)
        self.ended.pop(sid, None)
        self.live[sid] = session
        self._by_user[(session.client_user_id, session.customer_service_id)] = sid
        self._notify(session, "created")
        return session

    def set_state(
        self,
        session: DeskSession,
        *,
        state: str | None = None,
        raw_state: str | None = None,
        agent_id: str | None = None,
    ) -> None:
        """Move a session to a canonical state, or to a literal upstream string."""
        before = (session.state, session.raw_state, session.agent_id)
        self._move(session, state=state, raw_state=raw_state, agent_id=agent_id)
        if session.session_id in self.live and before != (
            session.state,
            session.raw_state,
            session.agent_id,
        ):
            self._notify(session, "state", before=before[0])

    def _move(
        self,
        session: DeskSession,
        *,
        state: str | None,
        raw_state: str | None,
        agent_id: str | None,
    ) -> None:
        if state is not None:
            if state not in CANONICAL_STATES:
                raise ValueError(f"state must be one of {', '.join(CANONICAL_STATES)}")
            session.state, session.raw_state = state, None
        if raw_state is not None:
            session.raw_state = raw_state
        if agent_id is not None:
            session.agent_id = agent_id
        elif session.state in AGENT_STATES and not session.agent_id:
            session.agent_id = DEFAULT_AGENT

    def by_user(self, client_user_id: str, customer_service_id: str) -> DeskSession | None:
        """The live session of a user with a customer-service account (B.3 second form)."""
        sid = self._by_user.get((client_user_id, customer_service_id))
        return self.live.get(sid) if sid else None

    def find(self, session_id: str) -> DeskSession | None:
        """A live or recently ended session."""
        return self.live.get(session_id) or self.ended.get(session_id)

    def end(self, session: DeskSession) -> None:
        """End a session: B.3/B.4 calls on it then answer 141005."""
        session.ended = True
        self.live.pop(session.session_id, None)
        key = (session.client_user_id, session.customer_service_id)
        if self._by_user.get(key) == session.session_id:
            del self._by_user[key]
        self.ended[session.session_id] = session
        self._notify(session, "ended")
        while len(self.ended) > self.config.max_desk_sessions:
            _, old = self.ended.popitem(last=False)
            self._forget_messages(old.messages)

    def spelled(self, session: DeskSession) -> tuple[str, str]:
        """``CurrentState`` as upstream spells it now, and the spelling used (zh or en)."""
        spelling = self.config.desk_spelling
        if spelling == "mixed":
            self._calls += 1
            spelling = "zh" if self._calls % 2 else "en"
        if session.raw_state is not None:
            return session.raw_state, spelling
        return SPELLINGS[spelling][session.state], spelling

    def new_message(self, session: DeskSession) -> StreamMessage:
        """Start a stream message with a fresh MsgKey (shaped like B.4's example)."""
        key = f"{secrets.randbelow(1000)}_{int(self._wall())}_{secrets.token_hex(13)}"
        stamp = int(self._wall() * 1000)
        message = StreamMessage(msg_key=key, session_id=session.session_id, created_ms=stamp)
        session.messages.append(message)
        self._messages[key] = message
        while len(session.messages) > _MESSAGES_PER_SESSION:
            self._forget_messages([session.messages.popleft()])
        return message

    def add_line(self, session: DeskSession, *, role: str, text: str, account: str) -> ChatLine:
        """A message the admin API adds (a user's, the bot's or an agent's), then told."""
        line = ChatLine(role=role, text=text, account=account, at_ms=int(self._wall() * 1000))
        session.lines.append(line)
        while len(session.lines) > _MESSAGES_PER_SESSION:
            session.lines.popleft()
        self._notify(session, "message", before=None)
        return line

    def message(self, msg_key: str) -> StreamMessage | None:
        """A stream message by MsgKey."""
        return self._messages.get(msg_key)

    def _forget_messages(self, messages: Any) -> None:
        for message in messages:
            self._messages.pop(message.msg_key, None)

    def reset(self) -> None:
        """Forget every session and message."""
        self.live.clear()
        self.ended.clear()
        self._by_user.clear()
        self._messages.clear()
