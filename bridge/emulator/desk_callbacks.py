"""The session event callback (docs/protocol.md B.6): every Desk change POSTed to a URL.

``POST <url>?SdkAppid=&CallbackCommand=Desk.SessionEventNotify&contenttype=json&ClientIP=
&OptPlatform=&RequestID=`` with the B.6 body. A delivery not answered HTTP 200 with
``ActionStatus: OK`` is retried with the same ``RequestID``, at most ``MAX_RETRIES`` times.
Deliveries go out one at a time in the order of the changes (so a receiver sees Transfer.Start
before Transfer.Success); a delayed one is sent on its own, later, as a late delivery would be.

Event names: B.6 confirms ``SessionBegin``, ``ChatBot.UserSendMsg`` and ``ChatBot.RobotSendMsg``;
the rest of Tencent's list was not retrieved, so the emulator uses the names in ``EVENTS``
(docs/desk.md lists them) and the bridge passes any name it does not know as ``callback``.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections import deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import httpx

from bridge.emulator.desk_history import DeskChange, text_body

logger = logging.getLogger(__name__)

COMMAND = "Desk.SessionEventNotify"
MAX_RETRIES = 3
EVENTS = {
    "begin": "SessionBegin",
    "user_bot_phase": "ChatBot.UserSendMsg",
    "bot": "ChatBot.RobotSendMsg",
    "user_agent_phase": "Staff.UserSendMsg",
    "agent": "Staff.StaffSendMsg",
    "transfer_start": "Transfer.Start",
    "transfer_success": "Transfer.Success",
    "transfer_fail": "Transfer.Fail",
    "agent_change": "Staff.Change",
    "end": "SessionEnd",
    "other_state": "Session.StateChange",
}
_QUEUED = frozenset({"queuing"})
_AGENT = frozenset({"agent", "waiting_for_agent"})
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]


@dataclass(kw_only=True)
class DeliveryRules:
    """Faults asked for through the admin API: each count applies to the next deliveries."""

    delay_ms: int = 0
    delay_count: int = 0
    duplicate: int = 0
    drop: int = 0


def event_name(change: DeskChange, role: str | None = None) -> str:
    """The B.6 ``Event`` of a registry change."""
    session = change.session
    if change.kind in ("created", "ended"):
        return EVENTS["begin" if change.kind == "created" else "end"]
    if change.kind == "message":
        if role == "user":
            phase = "user_agent_phase" if session.state in _AGENT | _QUEUED else "user_bot_phase"
            return EVENTS[phase]
        return EVENTS["agent" if role == "agent" else "bot"]
    return _state_event(change.before, session.state)


def _state_event(before: str | None, after: str) -> str:
    if after in _QUEUED:
        return EVENTS["transfer_start"]
    if after in _AGENT:
        return EVENTS["agent_change" if before in _AGENT else "transfer_success"]
    if before in _QUEUED and after == "chatbot":
        return EVENTS["transfer_fail"]
    return EVENTS["other_state"]


class _HidePaths(logging.Filter):
    """httpx logs every request's URL at INFO; a callback path is a secret, so it is replaced."""

    def __init__(self) -> None:
        super().__init__()
        self.paths: set[str] = set()

    def filter(self, record: logging.LogRecord) -> bool:
        """Redact in place; never drops a record."""
        if self.paths:
            message = record.getMessage()
            hidden = message
            for path in self.paths:
                hidden = hidden.replace(path, "/<callback path>")
            if hidden != message:
                record.msg, record.args = hidden, None
        return True


_HIDE = _HidePaths()
logging.getLogger("httpx").addFilter(_HIDE)


class CallbackSender:
    """Delivers B.6 notifications for one emulator."""

    def __init__(self, *, url: str, sdkappid: int, spawn: Spawn, wall: Callable[[], float]) -> None:
        self._url = ""
        self.url = url
        self.rules = DeliveryRules()
        self._sdkappid = sdkappid
        self._spawn = spawn
        self._wall = wall
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        self._worker: asyncio.Task[None] | None = None
        self._last_agent: dict[str, str] = {}
        self.log: deque[dict[str, Any]] = deque(maxlen=1000)
        self.counts = {"sent": 0, "acked": 0, "retries": 0, "dropped": 0, "failed": 0}

    @property
    def url(self) -> str:
        """Where notifications go ("" for nowhere)."""
        return self._url

    @url.setter
    def url(self, value: str) -> None:
        path = urlsplit(value).path
        if len(path) > 1:
            _HIDE.paths.add(path)
        self._url = value

    def observe(self, change: DeskChange) -> None:
        """A registry observer: one notification per change, when a URL is set."""
        if not self.url:
            return
        role = change.session.lines[-1].role if change.kind == "message" else None
        self.send(self.body(change, event_name(change, role)))

    def body(self, change: DeskChange, event: str) -> dict[str, Any]:
        """The B.6 body of a change."""
        session = change.session
        body: dict[str, Any] = {
            "CallbackCommand": COMMAND,
            "SessionId": session.session_id,
            "Event": event,
            "EventTime": int(self._wall() * 1000),
            "ChannelType": "SDK",
            "ClientUserId": session.client_user_id,
            "CustomerServiceId": session.customer_service_id,
            "AgentId": session.agent_id,
        }
        if change.kind == "message":
            line = session.lines[-1]
            body["MsgKey"] = f"{line.at_ms}_{uuid.uuid4().hex[:16]}"
            body["MsgBody"] = text_body(line.text)
            body["CloudCustomData"] = ""
        previous = self._last_agent.get(session.session_id, "")
        if event == EVENTS["agent_change"] and previous:
            body["ForwardFromAgentId"] = previous
        self._last_agent[session.session_id] = session.agent_id
        return body

    def send(self, body: dict[str, Any]) -> str:
        """Queue a notification under a new RequestID, applying drop/duplicate/delay rules."""
        request_id = uuid.uuid4().hex
        rules = self.rules
        if rules.drop > 0:
            rules.drop -= 1
            self.counts["dropped"] += 1
            self._record(request_id, body, attempts=0, ok=False, note="dropped")
            return request_id
        copies = 1
        if rules.duplicate > 0:
            rules.duplicate, copies = rules.duplicate - 1, 2
        for _ in range(copies):
            self._dispatch(request_id, body)
        return request_id

    def _dispatch(self, request_id: str, body: dict[str, Any]) -> None:
        rules = self.rules
        if rules.delay_count > 0 and rules.delay_ms > 0:
            rules.delay_count -= 1
            self._spawn(self._late(request_id, body, rules.delay_ms), f"desk-callback:{request_id}")
            return
        self._queue.put_nowait((request_id, body))
        if self._worker is None or self._worker.done():
            self._worker = self._spawn(self._drain(), "desk-callbacks")

    async def _late(self, request_id: str, body: dict[str, Any], delay_ms: int) -> None:
        await asyncio.sleep(delay_ms / 1000)
        async with httpx.AsyncClient(timeout=5.0) as http:
            await self._deliver(http, request_id, body)

    async def _drain(self) -> None:
        async with httpx.AsyncClient(timeout=5.0) as http:
            while True:
                request_id, body = await self._queue.get()
                await self._deliver(http, request_id, body)

    async def _deliver(
        self, http: httpx.AsyncClient, request_id: str, body: dict[str, Any]
    ) -> None:
        """One notification: the first attempt and up to MAX_RETRIES more, same RequestID."""
        for attempt in range(1 + MAX_RETRIES):
            if attempt:
                self.counts["retries"] += 1
                await asyncio.sleep(0.05 * 2 ** (attempt - 1))
            self.counts["sent"] += 1
            if await self._post(http, request_id, body):
                self.counts["acked"] += 1
                self._record(request_id, body, attempts=attempt + 1, ok=True)
                return
        self.counts["failed"] += 1
        self._record(request_id, body, attempts=1 + MAX_RETRIES, ok=False, note="gave up")

    async def _post(self, http: httpx.AsyncClient, request_id: str, body: dict[str, Any]) -> bool:
        params = {
            "SdkAppid": str(self._sdkappid),
            "CallbackCommand": COMMAND,
            "contenttype": "json",
            "ClientIP": "127.0.0.1",
            "OptPlatform": "RESTAPI",
            "RequestID": request_id,
        }
        try:
            answer = await http.post(self.url, params=params, json=body)
            reply = answer.json() if answer.status_code == 200 else {}
        except (httpx.HTTPError, ValueError):
            return False
        return isinstance(reply, dict) and reply.get("ActionStatus") == "OK"

    def _record(
        self, request_id: str, body: dict[str, Any], *, attempts: int, ok: bool, note: str = ""
    ) -> None:
        entry = {"request_id": request_id, "event": body.get("Event"), "ok": ok}
        entry.update(session_id=body.get("SessionId"), attempts=attempts, note=note)
        self.log.append(entry)

    def view(self) -> dict[str, Any]:
        """The admin view: whether a URL is set (never the URL: its path is a secret), rules,
        counts and the latest deliveries."""
        rules = self.rules
        return {
            "configured": bool(self.url),
            "rules": {
                "delay_ms": rules.delay_ms,
                "delay_count": rules.delay_count,
                "duplicate": rules.duplicate,
                "drop": rules.drop,
            },
            "counts": dict(self.counts),
            "deliveries": list(self.log),
        }
