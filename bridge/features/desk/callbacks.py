"""Tencent's Desk session event callback (docs/desk.md; docs/protocol.md B.6) as MQTT events.

`POST <desk.callback>?SdkAppid=&CallbackCommand=Desk.SessionEventNotify&...&RequestID=`:
the SdkAppid must be ours (else 403) and the command `Desk.SessionEventNotify` (else 400);
bodies over 64 KB are refused (413). Accepted notifications are answered OK at once and queued;
a consumer task publishes them afterwards, so a slow broker never delays the answer (B.6:
"process asynchronously and acknowledge quickly"). A retry with a RequestID already accepted is
answered OK and not published again. The path is a secret: no log line or answer names it.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import logging
import re
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import Receive, Scope, Send

from bridge.core import jsontext
from bridge.ids import valid_session_id
from bridge.tencent.desk_handover import iso_ms, message_text
from bridge.tencent.models import DeskState

log = logging.getLogger(__name__)

COMMAND = "Desk.SessionEventNotify"
MAX_BODY = 64 * 1024
ANSWERS_FIRST = 50  # loop passes a publication gives way to new POSTs, at most
OK = {"ActionStatus": "OK", "ErrorCode": 0, "ErrorInfo": ""}
_OK_BYTES = jsontext.dumps(OK, separators=(",", ":")).encode()
# B.6 confirms SessionBegin, ChatBot.UserSendMsg and ChatBot.RobotSendMsg; the other names are
# the emulator's (the rest of Tencent's list was not retrieved; docs/desk.md). Matched without
# case; anything else is published as `callback` with its name in data.event.
EVENT_TYPES: Mapping[str, str] = {
    "sessionbegin": "session_begin",
    "chatbot.usersendmsg": "user_message",
    "staff.usersendmsg": "user_message",
    "chatbot.robotsendmsg": "bot_message",
    "staff.staffsendmsg": "agent_message",
    "transfer.start": "transfer_started",
    "transfer.success": "transfer_succeeded",
    "transfer.fail": "transfer_failed",
    "staff.change": "agent_changed",
    "sessionend": "session_closed",
    "user.timeout": "user_timeout",
}
# The retained desk/<sid>/state an event implies (docs/desk.md "State from events").
IMPLIED_STATE: Mapping[str, DeskState] = {
    "transfer_started": "queuing",
    "transfer_failed": "chatbot",
    "session_closed": "ended",
}
# Events after which the state is one of several (a session may begin in the queue; a
# transfer that succeeded leaves it `Agent` or `WaitingForAgentAnswering`): asked for instead.
CONFIRM_STATE = frozenset({"session_begin", "transfer_succeeded", "agent_changed"})
# Where in a session's life each state-moving event comes: the order of events of one ms.
STAGE: Mapping[str, int] = {
    "session_begin": 0,
    "transfer_started": 1,
    "transfer_failed": 2,
    "transfer_succeeded": 2,
    "agent_changed": 3,
    "session_closed": 4,
}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


@dataclass(frozen=True, kw_only=True)
class Notification:
    """One accepted notification, typed."""

    session_id: str
    event_type: str
    data: dict[str, Any]
    state: DeskState | None
    event_time: int | None = None  # Tencent's EventTime, ms
    request_id: str | None = None  # Tencent's RequestID (or the body's digest): a retry's too
    confirm: bool = False  # the state after it is to be asked for


@functools.cache  # a few dozen names recur in every notification
def snake(name: str) -> str:
    """`SessionId` -> `session_id`, `MsgBody` -> `msg_body`, `ClientIP` -> `client_ip`."""
    return _CAMEL.sub("_", name).lower()


def snake_keys(value: Any) -> Any:
    """Every key of nested objects in snake_case."""
    if isinstance(value, Mapping):
        return {snake(str(k)): snake_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [snake_keys(v) for v in value]
    return value


def notification(body: Mapping[str, Any], request_id: str | None = None) -> Notification | None:
    """The event a B.6 body stands for; None without a valid SessionId."""
    sid = body.get("SessionId")
    if not valid_session_id(sid):
        return None  # it could not name a topic (docs/topics.md): refused, never published half-way
    assert isinstance(sid, str)
    name = body.get("Event")
    name = name if isinstance(name, str) else ""
    event_type = EVENT_TYPES.get(name.lower(), "callback")
    data: dict[str, Any] = snake_keys(body)  # every body field, `CallbackCommand` too
    data["event"] = name
    elements = body.get("MsgBody")
    if isinstance(elements, list):
        data["text"] = message_text(elements)
    stamp = body.get("EventTime")
    stamp = stamp if isinstance(stamp, int) and not isinstance(stamp, bool) else None
    data["time"] = iso_ms(stamp)
    data["raw"] = dict(body)
    return Notification(
        session_id=sid,
        event_type=event_type,
        data=data,
        state=IMPLIED_STATE.get(event_type),
        event_time=stamp if data["time"] is not None else None,  # only a time a date holds
        confirm=event_type in CONFIRM_STATE,
        request_id=request_id,
    )


class RecentIds:
    """The last `capacity` RequestIDs seen: a retry is recognised, memory stays bounded."""

    def __init__(self, capacity: int = 10_000) -> None:
        self._ids: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def add(self, request_id: str) -> bool:
        """Remember an id; False when it was already there."""
        if request_id in self._ids:
            self._ids.move_to_end(request_id)
            return False
        self._ids[request_id] = None
        while len(self._ids) > self._capacity:
            self._ids.popitem(last=False)
        return True

    def forget(self, request_id: str) -> None:
        """Drop an id (its notification could not be queued: let the retry in)."""
        self._ids.pop(request_id, None)


class CallbackReceiver:
    """Checks, de-duplicates and queues notifications; `run()` hands them to `on_event`."""

    def __init__(
        self,
        *,
        sdkappid: int,
        on_event: Callable[[Notification], None],
        queue_size: int = 10_000,
    ) -> None:
        self._sdkappid = str(sdkappid)
        self._on_event = on_event
        self._queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue(queue_size)
        self._seen = RecentIds()
        self.counts = {"accepted": 0, "duplicates": 0, "refused": 0, "failed": 0}

    def accept(self, query: Mapping[str, str], raw: bytes | None) -> tuple[int, dict[str, Any]]:
        """The HTTP status and answer for one POST (`raw` None: the body was too large)."""
        refused = self._refusal(query, raw)
        if refused is not None:
            self.counts["refused"] += 1
            log.warning("desk callback refused (%d): %s", refused[0], refused[1]["ErrorInfo"])
            return refused
        assert raw is not None
        try:  # deeper than any notification: refused here, not a recursion error later
            body = jsontext.loads(raw, max_depth=jsontext.MAX_DEPTH)
        except ValueError:
            body = None
        if not isinstance(body, dict) or not valid_session_id(body.get("SessionId")):
            self.counts["refused"] += 1
            log.warning("desk callback refused (400): body is not a B.6 notification")
            return 400, _fail(400, "body must be a JSON object with a valid SessionId")
        return self._queued(query.get("RequestID") or _digest(raw), body)

    def _refusal(
        self, query: Mapping[str, str], raw: bytes | None
    ) -> tuple[int, dict[str, Any]] | None:
        if query.get("SdkAppid") != self._sdkappid:
            return 403, _fail(403, "SdkAppid is not this application's")
        if query.get("CallbackCommand") != COMMAND:
            return 400, _fail(400, f"CallbackCommand must be {COMMAND}")
        if raw is None:
            return 413, _fail(413, f"body over {MAX_BODY} bytes")
        return None

    def _queued(self, request_id: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self._seen.add(request_id):
            self.counts["duplicates"] += 1
            return 200, OK  # a retry of one we have: published once (docs/desk.md)
        try:
            self._queue.put_nowait((request_id, body))  # typed later: the answer waits less
        except asyncio.QueueFull:
            self._seen.forget(request_id)  # not OK: Tencent retries it later
            return 503, _fail(503, "too many notifications waiting")
        self.counts["accepted"] += 1
        return 200, OK

    @property
    def depth(self) -> int:
        """Notifications accepted and not yet published."""
        return self._queue.qsize()

    async def run(self) -> None:
        """Publish queued notifications in arrival order, forever."""
        while True:
            request_id, body = await self._queue.get()
            try:
                note = notification(body, request_id)
                assert note is not None  # accept() let only bodies with a valid SessionId in
                self._on_event(note)
            except Exception:
                self.counts["failed"] += 1
                name = str(body.get("Event"))[:80]
                log.exception("desk callback: publishing a %r event failed", name)
            await self._answers_first()

    async def _answers_first(self) -> None:
        """Let the loop pass until one brings no new POST (at most `ANSWERS_FIRST` passes):
        in a burst every sender waits for its answer, while a publication can wait a little
        (docs/desk.md "Figures")."""
        for _ in range(ANSWERS_FIRST):
            seen = sum(self.counts.values())
            await asyncio.sleep(0)  # Queue.get does not yield while items wait
            if sum(self.counts.values()) == seen:
                return

    async def endpoint(self, scope: Scope, receive: Receive, send: Send) -> None:
        """The ASGI app on the secret path: a bare one, not a Starlette route, because a burst
        of notifications is answered one after another on the bridge's loop and every answer
        is waited for (docs/desk.md "Figures")."""
        if scope["method"] != "POST":
            await _answer(send, 405, _fail(405, "only POST"), allow=True)
            return
        query = dict(parse_qsl(scope["query_string"].decode("latin-1")))
        try:
            raw = await _read(scope, receive)
        except _Disconnected:
            return  # half a delivery is not accepted: Tencent retries it
        status, answer = self.accept(query, raw)
        await _answer(send, status, answer)


class _Disconnected(Exception):
    """The sender went away before the whole body arrived."""


async def _read(scope: Scope, receive: Receive) -> bytes | None:
    """The body, or None past MAX_BODY (a declared length is refused before reading)."""
    for name, value in scope["headers"]:
        if name == b"content-length" and value.isdigit() and int(value) > MAX_BODY:
            return None
    chunks, size, more = [], 0, True
    while more:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise _Disconnected
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > MAX_BODY:
            return None
        chunks.append(chunk)
        more = message.get("more_body", False)
    return b"".join(chunks)


async def _answer(send: Send, status: int, answer: dict[str, Any], *, allow: bool = False) -> None:
    body = _OK_BYTES if answer is OK else jsontext.dumps(answer, separators=(",", ":")).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", b"%d" % len(body))]
    if allow:
        headers.append((b"allow", b"POST"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


def _fail(status: int, info: str) -> dict[str, Any]:
    return {"ActionStatus": "FAIL", "ErrorCode": status, "ErrorInfo": info}


def _digest(raw: bytes) -> str:
    """Without a RequestID (the older B.6 page has none), the same body is the same event."""
    return "body:" + hashlib.sha256(raw).hexdigest()
