"""The Contact Center service over MQTT (SPEC 2.3, 2.4, 3.2, 3.4): state, watching, streams."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING, Any

import httpx

from bridge.core.actions import action
from bridge.core.envelope import dumps, now_iso
from bridge.errors import BridgeError, UpstreamError
from bridge.features.desk.payloads import GetState, SendStream, Unwatch, Watch
from bridge.features.desk.streams import SessionStream
from bridge.features.desk.watcher import DeskWatcher
from bridge.tencent.desk import DeskClient
from bridge.tencent.models import DeskSessionState

if TYPE_CHECKING:
    from bridge.features.deps import Deps

log = logging.getLogger(__name__)
StateKey = tuple[str, str | None, str | None]


class DeskFeature:
    """Desk session state, watching and ordered, coalesced stream messages."""

    name = "desk"
    upstream = True

    def __init__(self, *, deps: Deps, client: DeskClient, http: httpx.AsyncClient) -> None:
        self._cfg = deps.settings.desk
        self._client = client
        self._http = http
        self._publisher = deps.publisher
        self._emitter = deps.emitter
        self._topics = deps.topics
        self._owns = deps.ownership.owns
        self._states: dict[str, StateKey] = {}
        self._streams: dict[str, SessionStream] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._watching: asyncio.Task[None] | None = None
        self._senders: set[asyncio.Task[None]] = set()
        self._watcher = DeskWatcher(
            poll=self._poll, default_interval=self._cfg.poll_interval, rate=self._cfg.rate_limit
        )
        for sid in self._cfg.watch:
            self._watcher.watch(sid)
        self._reachable = True
        self._last_error: dict[str, Any] | None = None

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Watch sessions, host the stream senders, finish idle streams."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            self._watching = tg.create_task(self._watcher.run(), name="desk-watch")
            tg.create_task(self._idle_loop(), name="desk-stream-idle")
            for stream in self._streams.values():
                self._kick(stream)

    async def aclose(self) -> None:
        """Let queued chunks go out (bounded by the caller), stop polling, close HTTP."""
        if self._watching is not None:
            self._watching.cancel()
            await asyncio.gather(self._watching, return_exceptions=True)
        await self._watcher.aclose()
        await asyncio.gather(*self._senders, return_exceptions=True)
        await self._http.aclose()

    def status(self) -> dict[str, Any]:
        """The `desk` part of bridge/health."""
        return {
            "reachable": self._reachable,
            "last_error": self._last_error,
            "watched_sessions": len(self._watcher.watched),
            "polls": self._watcher.polls,
            "open_streams": sum(1 for s in self._streams.values() if s.open),
            "stream_queue_depth": sum(s.depth for s in self._streams.values()),
        }

    def _ok(self) -> None:
        self._reachable, self._last_error = True, None

    def _failed(self, exc: BridgeError) -> None:
        if exc.code in ("upstream_unavailable", "timeout", "auth_failed", "upstream_error"):
            self._reachable = False
        self._last_error = {"code": exc.code, "message": exc.message, "at": time.time()}

    # -- state --------------------------------------------------------------------------------
    @action("desk/get_session_state")
    async def get_session_state(self, payload: GetState) -> dict[str, Any]:
        """Fetch a session's state now and republish it."""
        state = await self._fetch(
            payload.session_id,
            client_user_id=payload.client_user_id,
            customer_service_id=payload.customer_service_id,
        )
        return self._publish_state(state)

    async def _fetch(self, sid: str | None, **by_user: str | None) -> DeskSessionState:
        try:
            state = await self._client.get_session_state(session_id=sid, **by_user)
        except UpstreamError as exc:
            if exc.code == "session_not_found" and sid is not None:
                self._ended(sid)
            else:
                self._failed(exc)
            raise
        self._ok()
        return state

    async def _poll(self, sid: str) -> None:
        if not self._owns(sid):
            return  # another instance watches it (SPEC 7)
        with contextlib.suppress(BridgeError):
            self._publish_state(await self._fetch(sid))

    def _publish_state(self, state: DeskSessionState) -> dict[str, Any]:
        sid = state.session_id
        body = {
            "session_id": sid,
            "state": state.state,
            "raw_state": state.raw_state,
            "agent_id": state.agent_id,
            "updated_at": now_iso(),
        }
        if sid is None:
            return body
        key: StateKey = (state.state, state.raw_state, state.agent_id)
        before = self._states.get(sid)
        if before != key:
            self._states[sid] = key
            self._publisher.set_retained(self._topics.desk_state(sid), dumps(body))
            self._emitter.emit(
                "desk",
                sid,
                "state_changed",
                body,
                before=before[0] if before else None,
                after=state.state,
            )
        return body

    def _ended(self, sid: str) -> None:
        """Error 141005: the session no longer exists (SPEC 2.3): `ended`, event, watch stops."""
        self._watcher.unwatch(sid)
        if self._states.get(sid, ("",))[0] == "ended":
            return
        before = self._states.get(sid)
        self._states[sid] = ("ended", None, None)
        body = {
            "session_id": sid,
            "state": "ended",
            "raw_state": None,
            "agent_id": None,
            "updated_at": now_iso(),
        }
        self._publisher.set_retained(self._topics.desk_state(sid), dumps(body))
        self._emitter.emit(
            "desk",
            sid,
            "session_ended",
            body,
            before=before[0] if before else None,
            after="ended",
        )

    # -- watching -----------------------------------------------------------------------------
    @action("desk/watch")
    async def watch(self, payload: Watch) -> dict[str, Any]:
        """Start polling a session's state (`stop: true` stops it)."""
        if payload.stop:
            return await self.unwatch(Unwatch(session_id=payload.session_id))
        every = self._watcher.watch(payload.session_id, payload.interval)
        return {"session_id": payload.session_id, "watching": True, "interval": every}

    @action("desk/unwatch")
    async def unwatch(self, payload: Unwatch) -> dict[str, Any]:
        """Stop polling a session's state."""
        was = self._watcher.unwatch(payload.session_id)
        return {"session_id": payload.session_id, "watching": False, "was_watching": was}

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
                send=self._client.send_stream_msg,
                on_finished=self._finished,
                max_queue=self._cfg.stream_queue_size,
            )
            self._streams[sid] = stream
        return stream

    def _kick(self, stream: SessionStream) -> None:
        if stream.running or self._tg is None:
            return
        stream.running = True
        task = self._tg.create_task(stream.drain(), name=f"desk-stream:{stream.session_id}")
        self._senders.add(task)
        task.add_done_callback(self._senders.discard)

    def _finished(self, sid: str, result: dict[str, Any]) -> None:
        self._emitter.emit("desk", sid, "stream_finished", result)

    async def _idle_loop(self) -> None:
        idle = self._cfg.stream_idle_timeout
        while True:
            await asyncio.sleep(min(1.0, idle / 4))
            limit = time.monotonic() - idle
            for stream in list(self._streams.values()):
                if stream.open and not stream.depth and not stream.running:
                    if stream.last_activity < limit:
                        stream.idle_finish()
                        self._kick(stream)
                elif not stream.open and not stream.depth and stream.last_activity < limit:
                    del self._streams[stream.session_id]  # forget quiet sessions


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
