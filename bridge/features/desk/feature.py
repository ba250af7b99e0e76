"""The Contact Center service over MQTT (docs/topics.md, docs/design.md, docs/reliability.md):
state, watching, streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.types import ASGIApp

from bridge.core import jsontext
from bridge.core.actions import action
from bridge.core.condition import Condition
from bridge.core.envelope import dumps, now_iso
from bridge.core.inbound import Inbound
from bridge.core.membership import Change
from bridge.core.waits import until
from bridge.errors import BridgeError, UpstreamError
from bridge.features.desk import handover
from bridge.features.desk.callbacks import CallbackReceiver, Notification, RecentIds, notification
from bridge.features.desk.ended import EndedSessions
from bridge.features.desk.handover import EndSession, GetMessages, TransferToHuman
from bridge.features.desk.order import Sent, StateOrder
from bridge.features.desk.payloads import GetState, SendStream, Unwatch, Watch
from bridge.features.desk.streams import SessionStream
from bridge.features.desk.watcher import DeskWatcher
from bridge.tencent.desk import DeskClient
from bridge.tencent.models import DeskSessionState
from bridge.tencent.session import HttpSession

if TYPE_CHECKING:
    from bridge.features.deps import Deps

log = logging.getLogger(__name__)
StateKey = tuple[str, str | None, str | None]
# Errors that say the service (not one request) fails: /readyz shows `desk: false` on them.
SERVICE_FAILURES = frozenset({"upstream_unavailable", "timeout", "auth_failed", "upstream_error"})
VERIFY_AFTER = 60.0  # seconds without a Desk call before /readyz makes one of its own
VERIFY_SESSION = "tencent2mqtt-credentials-check"  # never a real session: answered 141005
T = TypeVar("T")


class DeskFeature:
    """Desk session state, watching and ordered, coalesced stream messages."""

    name = "desk"
    upstream = True

    def __init__(self, *, deps: Deps, client: DeskClient, http: HttpSession) -> None:
        self._cfg = deps.settings.desk
        self._client = client
        self._http = http
        self._publisher = deps.publisher
        self._emitter = deps.emitter
        self._topics = deps.topics
        self._owns = deps.ownership.owns
        self._membership = deps.membership
        # In a cluster: the bodies this instance retained lately (their echo is not news)
        self._mine: dict[str, deque[bytes]] = {}
        self._reassert = False  # fenced since the last re-assertion of the owned states
        if deps.membership is not None:
            deps.membership.listeners.append(self._moved)
        self._states: dict[str, StateKey] = {}
        self._ended_sessions = EndedSessions(self._cfg.ended_retention)
        self._streams: dict[str, SessionStream] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._watching: asyncio.Task[None] | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self._order = StateOrder()  # which of callbacks and queries moved the state last
        self._handled = RecentIds()  # RequestIDs taken here, a retry through another instance too
        self._watcher = DeskWatcher(
            poll=self._poll, default_interval=self._cfg.poll_interval, rate=self._cfg.rate_limit
        )
        for sid in self._cfg.watch:
            self._watcher.watch(sid)
        self._condition = Condition(name="desk", logger=log)
        self._verifying: asyncio.Task[None] | None = None
        self._callbacks: CallbackReceiver | None = None
        self._watch_hooks = deps.desk_watches
        if self._cfg.callback_path and self._cfg.sdkappid is not None:
            self._callbacks = CallbackReceiver(sdkappid=self._cfg.sdkappid, on_event=self._notified)

    # -- lifecycle ----------------------------------------------------------------------------
    def start(self) -> None:
        """At start: the watch hooks hear of the sessions watched by configuration."""
        for sid in self._watcher.watched:
            self._watch_changed(sid, True)

    async def run(self) -> None:
        """Watch sessions, host the stream senders, finish idle streams."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._watching = tg.create_task(self._watcher.run(), name="desk-watch")
            if not self._cfg.watch:  # no poll will judge the credentials: one call says now
                tg.create_task(self.verify(), name="desk-verify")
            tg.create_task(self._housekeeping(), name="desk-housekeeping")
            if self._callbacks is not None:
                tg.create_task(self._callbacks.run(), name="desk-callbacks")
            for stream in self._streams.values():
                self._kick(stream)

    async def aclose(self) -> None:
        """Let queued chunks go out (bounded by the caller), stop polling, close HTTP."""
        if self._verifying is not None:
            self._verifying.cancel()
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        await self._watcher.aclose()
        await asyncio.gather(*self._senders, return_exceptions=True)
        await self._http.aclose()

    def status(self) -> dict[str, Any]:
        """The `desk` part of bridge/health."""
        return {
            **self._condition.status(),
            "watched_sessions": len(self._watcher.watched),
            "polls": self._watcher.polls,
            "open_streams": sum(1 for s in self._streams.values() if s.open),
            "stream_queue_depth": sum(s.depth for s in self._streams.values()),
            "callbacks": self._callback_status(),
        }

    def _callback_status(self) -> dict[str, Any] | None:
        if self._callbacks is None:
            return None
        return {**self._callbacks.counts, "queue_depth": self._callbacks.depth}

    # -- session event callback (docs/desk.md; docs/protocol.md B.6) ----------------------------
    def http_endpoints(self) -> dict[str, ASGIApp]:
        """The callback endpoint on its secret path, when `desk.callback` is set."""
        if self._callbacks is None:
            return {}
        return {self._cfg.callback_path: self._callbacks.endpoint}

    def _notified(self, note: Notification) -> None:
        """A notification this instance's endpoint accepted: in a cluster, for the session's
        owner (docs/scale-out.md), which publishes all of a session's events."""
        if self._membership is not None and not self._owns(note.session_id):
            body = {"request_id": note.request_id, "body": note.data["raw"]}
            self._publisher.publish(self._topics.desk_forward(note.session_id), dumps(body))
            return
        self._take(note)

    def _forwarded(self, sid: str, payload: bytes) -> None:
        """A notification another instance's endpoint accepted: taken by the owner alone."""
        if not self._owns(sid):
            return
        doc = jsontext.object_of(payload)
        if doc is None or not isinstance(doc.get("body"), dict):
            return
        request_id = doc.get("request_id")
        note = notification(doc["body"], request_id if isinstance(request_id, str) else None)
        if note is not None and note.session_id == sid:
            self._take(note)

    def _take(self, note: Notification) -> None:
        """Publish one accepted notification, then move the state it implies, or ask for the
        state when the event leaves it open or may be older than what a query found (docs/desk.md
        "State from events"). A late delivery (a retry, a delay) is published as an event but
        moves no state; nor does anything once the session has ended."""
        sid = note.session_id
        if note.request_id is not None and not self._handled.add(note.request_id):
            return  # Tencent's retry, received by another instance than the first time
        self._emitter.emit("desk", sid, note.event_type, note.data)
        if not (note.state or note.confirm) or self._has_ended(sid):
            return
        if not self._order.notified(note):
            return
        if note.state == "ended":
            self._ended(sid)
        elif note.state is not None and self._order.trusted(note):
            self._order.moved(sid)
            self._publish_state(
                DeskSessionState(session_id=sid, state=note.state, raw_state=None, agent_id=None)
            )
        elif self._tg is not None:
            self._tg.create_task(self._confirm(sid), name=f"desk-confirm:{sid}")

    def _has_ended(self, sid: str) -> bool:
        return self._states.get(sid, ("",))[0] == "ended"

    async def _confirm(self, sid: str) -> None:
        with contextlib.suppress(BridgeError):  # a failed query is judged and logged as any
            await self._query(sid)

    def _ok(self) -> None:
        self._condition.ok()

    def _failed(self, exc: BridgeError) -> None:
        self._condition.failed(exc.code, exc.message, unreachable=exc.code in SERVICE_FAILURES)

    async def verify(self) -> None:
        """Judge the credentials with a real call when none was made in `VERIFY_AFTER` s (at
        start with no session watched, and for `/readyz`): a wrong key showed nowhere. It asks
        for a session that cannot exist: Desk checks the UserSig first, so "no such session"
        means the credentials passed. Awaited only while nothing is known: otherwise the last
        judgment answers now and the check updates it (a readiness probe has a short timeout)."""
        last = self._condition.last_call
        if last is not None and time.monotonic() - last < VERIFY_AFTER:
            return
        if self._verifying is None or self._verifying.done():
            self._verifying = asyncio.create_task(self._verify_once(), name="desk-verify")
        if self._condition.reachable is None:
            await asyncio.shield(self._verifying)

    async def _verify_once(self) -> None:
        try:
            await self._client.get_session_state(session_id=VERIFY_SESSION)
        except UpstreamError as exc:
            if exc.code == "session_not_found":
                self._ok()
            else:
                self._failed(exc)
            return
        except BridgeError as exc:
            self._failed(exc)
            return
        self._ok()

    async def _send_stream_msg(self, **fields: Any) -> str | None:
        """The client's `send_stream_msg`, its outcome judging the service like any call."""
        return await self._guarded(fields["session_id"], self._client.send_stream_msg(**fields))

    # -- state --------------------------------------------------------------------------------
    @action("desk/get_session_state")
    async def get_session_state(self, payload: GetState) -> dict[str, Any]:
        """Fetch a session's state now and republish it."""
        return await self._query(
            payload.session_id,
            republish=True,
            client_user_id=payload.client_user_id,
            customer_service_id=payload.customer_service_id,
        )

    async def _query(
        self, sid: str | None, *, republish: bool = False, **by_user: str | None
    ) -> dict[str, Any]:
        """Ask for a session's state and retain the answer, unless the state moved while the
        question was out (`StateOrder.answered`): then the answer is only returned."""
        sent = self._order.sent()
        state = await self._fetch(sid, **by_user)
        return self._publish_answer(state, sent, republish=republish)

    def _publish_answer(
        self, state: DeskSessionState, sent: Sent, *, republish: bool
    ) -> dict[str, Any]:
        sid = state.session_id
        if sid is not None and (self._has_ended(sid) or not self._order.answered(sid, sent)):
            return _body(state)  # older than what is retained: an answer, not a move
        return self._publish_state(state, republish=republish)

    async def _fetch(self, sid: str | None, **by_user: str | None) -> DeskSessionState:
        try:
            state = await self._client.get_session_state(session_id=sid, **by_user)
        except UpstreamError as exc:
            if exc.code == "session_not_found" and sid is not None:
                self._ok()  # the service answered: it is the session that is gone
                self._ended(sid)
            else:
                self._failed(exc)
            raise
        self._ok()
        return state

    async def _poll(self, sid: str) -> None:
        if not self._owns(sid):
            return  # another instance watches it (docs/scale-out.md)
        with contextlib.suppress(BridgeError):
            await self._query(sid)

    def _publish_state(self, state: DeskSessionState, *, republish: bool = False) -> dict[str, Any]:
        """Retain the state and emit `state_changed` when it changed; `republish` retains it
        even when it did not (`desk/<sid>/get`, docs/topics.md), without an event."""
        sid = state.session_id
        body = _body(state)
        if sid is None or self._has_ended(sid):
            return body  # nothing moves an ended session
        key: StateKey = (state.state, state.raw_state, state.agent_id)
        before = self._states.get(sid)
        if _same_change(before, key):
            # A callback (no upstream spelling) and a poll saw the same change: publish it once.
            self._states[sid] = key if key[1] is not None else before  # type: ignore[assignment]
        elif before != key:
            self._states[sid] = key
            self._retain_state(sid, body)
            self._emitter.emit(
                "desk",
                sid,
                "state_changed",
                body,
                before=before[0] if before else None,
                after=state.state,
            )
        elif republish:
            self._publisher.set_retained(self._topics.desk_state(sid), dumps(body))
        return body

    def _watch_changed(self, sid: str, watched: bool) -> None:
        for hook in self._watch_hooks:
            hook(sid, watched)

    def _ended(self, sid: str) -> None:
        """Error 141005: the session no longer exists (docs/topics.md): `ended`, event, watch
        stops."""
        if self._watcher.unwatch(sid):
            self._watch_changed(sid, False)
        self._order.forget(sid)  # nothing moves an ended session
        if self._has_ended(sid):
            return
        before = self._states.get(sid)
        self._states[sid] = ("ended", None, None)
        self._ended_sessions.mark(sid)
        body = _body(DeskSessionState(session_id=sid, state="ended", raw_state=None, agent_id=None))
        self._retain_state(sid, body)
        self._emitter.emit(
            "desk",
            sid,
            "session_ended",
            body,
            before=before[0] if before else None,
            after="ended",
        )

    def _retain_state(self, sid: str, body: dict[str, Any]) -> None:
        """Retain `<base>/desk/<sid>/state`; in a cluster with the watch (docs/scale-out.md: watches
        outlive the instance that received them, so the watch lives on the broker)."""
        if self._membership is not None:
            every = self._watcher.interval(sid)
            body["watch"] = {"interval": every} if every is not None else None
        raw = dumps(body)
        if self._membership is not None:
            self._mine.setdefault(sid, deque(maxlen=8)).append(raw)
        self._publisher.set_retained(self._topics.desk_state(sid), raw)

    def _share_watch(self, sid: str) -> None:
        if self._membership is None:
            return
        known = self._states.get(sid)
        state, raw_state, agent_id = known if known is not None else (None, None, None)
        body = {"session_id": sid, "state": state, "raw_state": raw_state, "agent_id": agent_id}
        self._retain_state(sid, {**body, "updated_at": now_iso()})

    # -- cluster (docs/scale-out.md) -----------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """In a cluster: every Desk state (the last state seen and the watch), and the
        callbacks other instances received."""
        if self._membership is None:
            return []
        return [self._topics.states("desk"), self._topics.desk_forwards]

    def handles(self, msg: Inbound) -> bool:
        """Learn a retained Desk state another instance published (cluster only)."""
        if self._membership is None:
            return False
        forwarded = self._topics.desk_forward_of(msg.topic)
        if forwarded is not None:
            self._forwarded(forwarded, msg.payload)
            return True
        sid = self._topics.state_session("desk", msg.topic)
        if sid is None:
            return False
        if msg.payload not in self._mine.get(sid, ()):
            self._learn(sid, msg.payload)
        return True

    def _learn(self, sid: str, payload: bytes) -> None:
        if not payload and sid in self._ended_sessions:
            self._forget(sid)  # its owner let the ended session go
            return
        doc = jsontext.object_of(payload) if payload else {}
        if doc is None:
            return
        state = doc.get("state")
        if isinstance(state, str):
            self._states[sid] = (state, doc.get("raw_state"), doc.get("agent_id"))
            if state == "ended":
                self._ended_sessions.mark(sid)  # let go after the retention here too
        watch = doc.get("watch")
        every = watch.get("interval") if isinstance(watch, dict) else None
        if isinstance(every, int | float) and every > 0 and state != "ended":
            if self._watcher.interval(sid) != every:
                self._watcher.watch(sid, float(every))
        elif "watch" in doc or not payload or state == "ended":
            self._watcher.unwatch(sid)

    def owned(self) -> int:
        """Desk sessions this instance watches or streams."""
        owned = {sid for sid in self._watcher.watched if self._owns(sid)}
        owned.update(sid for sid, s in self._streams.items() if s.open and self._owns(sid))
        return len(owned)

    def _moved(self, change: Change) -> None:
        """Fenced: drop every stream now, without a call (the new owner starts a new message).
        Active again after that: retain the states and watches of the sessions it owns again,
        which a broker restarted without persistence has lost (docs/scale-out.md)."""
        assert self._membership is not None
        if not change.fenced:
            me = self._membership.me
            if self._reassert and me in change.after and me not in change.before:
                self._reassert = False
                for sid in [s for s in self._states if self._owns(s)]:
                    self._share_watch(sid)
            return
        self._reassert = True
        lost = BridgeError(
            "the bridge lost its MQTT connection", code="channel_unavailable", retryable=True
        )
        for stream in self._streams.values():
            stream.drop(lost)
        for task in list(self._senders):
            task.cancel()
        self._streams.clear()

    async def release(self, change: Change) -> None:
        """Finish (`Finish: 1`) the open messages of sessions that moved away, then forget
        them; bounded by `request_timeout`."""
        moved = [s for sid, s in self._streams.items() if not self._owns(sid)]
        for stream in moved:
            if stream.finish_for_move() is not None:
                self._kick(stream)
        await until(lambda: not any(s.depth or s.running for s in moved), self._cfg.request_timeout)
        for stream in moved:
            if self._streams.get(stream.session_id) is stream and not self._owns(stream.session_id):
                del self._streams[stream.session_id]

    # -- watching -----------------------------------------------------------------------------
    @action("desk/watch")
    async def watch(self, payload: Watch) -> dict[str, Any]:
        """Start polling a session's state (`stop: true` stops it)."""
        if payload.stop:
            return await self.unwatch(Unwatch(session_id=payload.session_id))
        every = self._watcher.watch(payload.session_id, payload.interval)
        self._watch_changed(payload.session_id, True)
        self._share_watch(payload.session_id)
        return {"session_id": payload.session_id, "watching": True, "interval": every}

    @action("desk/unwatch")
    async def unwatch(self, payload: Unwatch) -> dict[str, Any]:
        """Stop polling a session's state."""
        was = self._watcher.unwatch(payload.session_id)
        if was:
            self._watch_changed(payload.session_id, False)
        self._share_watch(payload.session_id)
        return {"session_id": payload.session_id, "watching": False, "was_watching": was}

    # -- handover and history (docs/protocol.md B.5) -------------------------------------------
    @action("desk/transfer_to_human")
    async def transfer_to_human(self, payload: TransferToHuman) -> dict[str, Any]:
        """Hand the customer to a human agent; answers with the agent when one was assigned."""
        return await self._guarded(payload.session_id, handover.transfer(self._client, payload))

    @action("desk/end_session")
    async def end_session(self, payload: EndSession) -> dict[str, Any]:
        """End a session that was transferred to a human; its state becomes `ended`."""
        await self._guarded(payload.session_id, self._client.end_session(payload.session_id))
        self._ended(payload.session_id)
        return {"session_id": payload.session_id, "ended": True}

    @action("desk/get_messages")
    async def get_messages(self, payload: GetMessages) -> dict[str, Any]:
        """One page of a session's chat history, roles named, times in ISO 8601."""
        return await self._guarded(payload.session_id, handover.messages(self._client, payload))

    async def _guarded(self, sid: str, call: Awaitable[T]) -> T:
        """A call about one session, its outcome judging the service; as for state queries,
        141005 publishes the retained `ended` state, then fails."""
        try:
            result = await call
        except BridgeError as exc:
            if exc.code != "session_not_found":
                self._failed(exc)
                raise
            self._ok()  # the service answered: it is the session that is gone
            self._ended(sid)
            raise
        self._ok()
        return result

    # -- streams ------------------------------------------------------------------------------
    @action("desk/send_stream", reply="when_asked")
    async def send_stream(self, payload: SendStream) -> dict[str, Any] | None:
        """Send a chunk of a streamed message; replies on error, on finish, or when asked."""
        stream = self._stream(payload.session_id)
        done = stream.add(payload.chunk, finish=payload.finish)  # before any await: in order
        self._kick(stream)
        return await done

    def _stream(self, sid: str) -> SessionStream:
        stream = self._streams.get(sid)
        if stream is None:
            stream = SessionStream(
                sid,
                send=self._send_stream_msg,
                on_finished=self._finished,
                max_queue=self._cfg.stream_queue_size,
            )
            self._streams[sid] = stream
        return stream

    def _kick(self, stream: SessionStream) -> None:
        if stream.running or self._tg is None:
            return
        stream.running = True
        task = self._tg.create_task(self._drain(stream), name=f"desk-stream:{stream.session_id}")
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    async def _drain(self, stream: SessionStream) -> None:
        if self._membership is not None and self._owns(stream.session_id):
            await self._membership.handover.gate(stream.session_id)  # the old owner finishes
        await stream.drain()

    def _finished(self, sid: str, result: dict[str, Any]) -> None:
        self._emitter.emit("desk", sid, "stream_finished", result)

    async def _housekeeping(self) -> None:
        """Finish quiet streams, forget finished ones, let ended sessions go."""
        idle = self._cfg.stream_idle_timeout
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            self._expire()
            limit = time.monotonic() - idle
            for stream in list(self._streams.values()):
                if stream.open and not stream.depth and not stream.running:
                    if stream.last_activity < limit:
                        stream.idle_finish()
                        self._kick(stream)
                elif not stream.open and not stream.depth and stream.last_activity < limit:
                    del self._streams[stream.session_id]  # forget quiet sessions

    def _expire(self) -> None:
        """Clear the retained state of sessions ended `ended_retention` seconds ago, and forget
        them (docs/desk.md "Ended sessions"). In a cluster their owner clears them and the others
        forget them when they see it (`_learn`)."""
        for sid in self._ended_sessions.due():
            if self._owns(sid):
                self._forget(sid)
                self._publisher.clear_retained(self._topics.desk_state(sid))

    def _forget(self, sid: str) -> None:
        self._ended_sessions.discard(sid)
        self._states.pop(sid, None)
        self._order.forget(sid)
        self._mine.pop(sid, None)
        self._emitter.forget("desk", sid)


def _body(state: DeskSessionState) -> dict[str, Any]:
    """The retained `desk/<sid>/state` payload of a state."""
    return {
        "session_id": state.session_id,
        "state": state.state,
        "raw_state": state.raw_state,
        "agent_id": state.agent_id,
        "updated_at": now_iso(),
    }


def _same_change(before: StateKey | None, key: StateKey) -> bool:
    """Same state and agent, one of the two without an upstream spelling (from a callback)."""
    if before is None or None not in (before[1], key[1]):
        return False
    return before[0] == key[0] and before[2] == key[2]


def build_desk(deps: Deps) -> DeskFeature | None:
    """The Desk feature, or None (with a clear log line) when disabled or without credentials."""
    cfg = deps.settings.desk
    if not cfg.enabled:
        log.info("desk: disabled by configuration")
        return None
    if not cfg.has_credentials or cfg.sdkappid is None or cfg.identifier is None:
        log.warning("desk: disabled: set desk.sdkappid, desk.identifier and desk.secret_key")
        return None
    assert cfg.secret_key is not None
    http = deps.http_client(cfg.request_timeout)
    client = DeskClient(
        http,
        base_url=cfg.base_url,
        sdkappid=cfg.sdkappid,
        identifier=cfg.identifier,
        secret_key=cfg.secret_key,
        usersig_ttl=cfg.usersig_ttl,
        retry=deps.retry,
        observer=deps.observe_call,
    )
    return DeskFeature(deps=deps, client=client, http=http)
