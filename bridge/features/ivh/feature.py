"""The Digital Human service over MQTT (docs/topics.md, docs/design.md, docs/reliability.md):
actions, polling, channels."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import TYPE_CHECKING, Any, TypeVar

from bridge.config import Settings
from bridge.core.actions import Empty, action
from bridge.core.condition import Condition
from bridge.core.envelope import dumps, now_iso
from bridge.core.inbound import Inbound
from bridge.core.membership import Change
from bridge.core.ownership import POLL_KEY
from bridge.core.waits import until
from bridge.errors import BridgeError, ChannelError, RequestError, UpstreamError
from bridge.features.ivh import frames
from bridge.features.ivh.channel import ChannelSettings, SessionChannel
from bridge.features.ivh.payloads import (
    CreateSession,
    SendAudio,
    SendCommand,
    SendText,
    SessionRef,
    StreamText,
)
from bridge.features.ivh.tracker import SessionState, SessionTracker, state_of
from bridge.features.ivh.utterances import Drive, Utterances
from bridge.features.ivh.voice import Voice, clip_of
from bridge.tencent.ivh import IvhClient
from bridge.tencent.models import SessionInfo, SessionStat, status_name
from bridge.tencent.session import HttpSession
from bridge.tencent.signing import channel_url, default_channel_url

if TYPE_CHECKING:
    from bridge.features.deps import Deps

log = logging.getLogger(__name__)
T = TypeVar("T")
Build = Callable[[], list[Drive]]  # a drive's frames: one, or a stream chunk's pieces
_GONE = ("session_closed", "session_not_found")


class IvhFeature:
    """Session actions, status watching and one command channel per started session."""

    name = "ivh"
    upstream = True

    def __init__(self, *, deps: Deps, client: IvhClient, http: HttpSession) -> None:
        self._cfg = deps.settings.ivh
        self._client = client
        self._http = http
        self._emitter = deps.emitter
        self._publisher = deps.publisher
        self._topics = deps.topics
        self._owns = deps.ownership.owns
        self._membership = deps.membership
        clustered = deps.membership is not None
        self._tracker = SessionTracker(
            publisher=deps.publisher,
            emitter=deps.emitter,
            topics=deps.topics,
            closed_retention=self._cfg.closed_retention,
            on_transition=self._transition,
            learning=clustered,
            snapshot_owner=(lambda: self._owns(POLL_KEY)) if clustered else None,
            event_owner=self._owns if clustered else None,
        )
        self._ws_base = self._cfg.channel.url or default_channel_url(self._cfg.base_url)
        self._channel_settings = _channel_settings(deps.settings)
        self._channels: dict[str, SessionChannel] = {}
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._tg: asyncio.TaskGroup | None = None
        self._utterances = Utterances()
        self._polling = False  # this instance owns the listing poll (always, alone)
        # Replay keys a previous owner handed over, for channels not open here yet
        self._seeds: dict[str, list[Any]] = {}
        if deps.membership is not None:
            deps.membership.listeners.append(self._moved)
            deps.membership.release_listeners.append(self._handed_over)
        self._voice = Voice(utterances=self._utterances, timeout=self._cfg.request_timeout)
        self._locks: dict[str, asyncio.Lock] = {}
        self._condition = Condition(name="ivh", logger=log)
        self._listeners = deps.session_changes
        self._poller: asyncio.Task[None] | None = None
        self.last_poll_ms = 0.0
        self.polls = 0

    # -- lifecycle ----------------------------------------------------------------------------
    async def run(self) -> None:
        """Poll the session list and host the channels' tasks."""
        async with asyncio.TaskGroup() as tg:
            self._tg = tg
            for channel in self._channels.values():
                self._spawn(channel)
            self._poller = tg.create_task(self._poll_loop(), name="ivh-poll")

    async def _poll_loop(self) -> None:
        while True:
            if self._owns(POLL_KEY):  # one poller in a cluster; the others learn the states
                if not self._polling:
                    self._polling = True
                    if self._membership is not None:
                        self._tracker.republish_all()
                await self.poll_once()
                self._tracker.expire()
            else:
                self._polling = False
                self._tracker.expire(publish=False)
            await asyncio.sleep(self._cfg.poll_interval)

    async def poll_once(self) -> None:
        """One `listsessionofuin`; a failure changes nothing and is reported on health."""
        asked_at = time.monotonic()
        try:
            infos = await self._client.list_sessions()
        except BridgeError as exc:
            self._failed(exc)
            return
        # Parsing a large listing and diffing it each take a while (docs/performance.md,
        # polling): what waits for the loop (commands, events) runs in between, not after both.
        await asyncio.sleep(0)
        started = time.perf_counter()
        self._tracker.apply_list(infos, asked_at=asked_at)
        self.last_poll_ms = (time.perf_counter() - started) * 1000
        self.polls += 1
        self._condition.ok()

    def _failed(self, exc: BridgeError) -> None:
        self._condition.failed(exc.code, f"session poll failed: {exc.message}")

    async def aclose(self) -> None:
        """Stop polling, close every channel, then the HTTP client."""
        for channel in self._channels.values():
            channel.close()
        tasks = [*self._tasks.values(), *([self._poller] if self._poller else [])]
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        await self._http.aclose()

    # -- cluster (docs/scale-out.md) -----------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """In a cluster: every session state, to learn what the poll owner and others saw."""
        return [self._topics.states("ivh")] if self._membership is not None else []

    def handles(self, msg: Inbound) -> bool:
        """Take a retained session state published by an instance (cluster only)."""
        if self._membership is None:
            return False
        sid = self._topics.state_session("ivh", msg.topic)
        if sid is None:
            return False
        self._tracker.learn(sid, msg.payload)
        return True

    def owned(self) -> int:
        """Live sessions whose channel this instance holds or would hold."""
        return sum(1 for sid in self._tracker.live_ids() if self._owns(sid))

    def _moved(self, change: Change) -> None:
        """The active set changed: drop everything when fenced, else open what was gained
        (each waits for its release, `channel_gate`); `release` closes what was lost."""
        if change.fenced:
            for sid in list(self._channels):
                self._drop_channel(sid)
            # The broker may have lost the states (restarted without persistence): whoever
            # takes the poll next republishes them all (`_poll_loop`), this instance too.
            self._polling = False
            return
        if not self._cfg.channel.auto_connect:
            return
        for sid in self._tracker.live_ids():
            state = self._tracker.get(sid)
            if (
                state is not None
                and state.drivable
                and sid not in self._channels
                and self._owns(sid)
            ):
                self._channel(sid)

    async def release(self, change: Change) -> dict[str, Any]:
        """Close the channels of sessions this instance no longer owns, once the drives they
        had already taken are on the socket (bounded by `request_timeout`). The announcement
        carries each one's recent speak-status keys: the cloud re-sends those to the new
        owner's socket (docs/protocol.md A.4), which must not publish them twice."""
        lost = [sid for sid in self._channels if not self._owns(sid)]
        holding = [c for sid in lost if (c := self._channels.get(sid)) is not None]
        for channel in holding:
            await self._end_utterances(channel)
        await until(lambda: not any(c.queue_depth for c in holding), self._cfg.request_timeout)
        replays = {c.session_id: c.recent_replays() for c in holding}
        tasks = [t for sid in lost if (t := self._drop_channel(sid)) is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=5.0)
        return {"ivh_replays": {sid: keys for sid, keys in replays.items() if keys}}

    async def _end_utterances(self, channel: SessionChannel) -> None:
        """A session moving away: end its open text stream (`IsFinal`, docs/protocol.md A.5)
        and its live audio behind the drives already queued, so that the cloud does not hold
        them open for the new owner's socket."""
        sid = channel.session_id
        async with self._locks.setdefault(sid, asyncio.Lock()):  # behind the queued drives
            with contextlib.suppress(BridgeError):  # a full queue: the cloud ends it itself
                if self._utterances.live(sid):
                    command, req_id, data = self._utterances.chunk(sid, "", final=True)
                    channel.enqueue(frames.drive(sid, command, data, req_id), paced=False)
                self._voice.end(sid, channel)

    def _handed_over(self, body: dict[str, Any]) -> None:
        """A release announcement: seed the channels of the sessions this instance takes."""
        replays = body.get("ivh_replays")
        if not isinstance(replays, dict):
            return
        for sid, keys in replays.items():
            if not isinstance(keys, list) or not self._owns(sid):
                continue
            channel = self._channels.get(sid)
            if channel is not None:
                channel.seed(keys)
            else:
                self._seeds[sid] = keys

    def _drop_channel(self, sid: str) -> asyncio.Task[None] | None:
        self._utterances.forget(sid)
        channel = self._channels.pop(sid, None)
        if channel is not None:
            channel.close()
        task = self._tasks.pop(sid, None)
        if task is not None:
            task.cancel()
        return task

    async def channel_gate(self, session_id: str) -> None:
        """Before a channel's first socket: wait for the previous owner's release."""
        if self._membership is not None:
            await self._membership.handover.gate(session_id)

    def status(self) -> dict[str, Any]:
        """The `ivh` part of bridge/health."""
        return {
            **self._condition.status(),
            "sessions": self._tracker.live_count,
            "open_channels": sum(1 for c in self._channels.values() if c.connected),
            "channel_queue_depth": sum(c.queue_depth for c in self._channels.values()),
            "polls": self.polls,
            "last_poll_ms": round(self.last_poll_ms, 3),
        }

    # -- channels -----------------------------------------------------------------------------
    def _transition(self, before: SessionState | None, after: SessionState) -> None:
        for listener in self._listeners:
            try:
                listener(before, after)
            except Exception:
                log.exception("ivh: a session listener failed on %s", after.session_id)
        sid = after.session_id
        if after.stream_max_interval is not None and not after.terminal:
            self._utterances.set_max_interval(sid, after.stream_max_interval / 1000)
        if after.terminal:
            self._utterances.forget(sid)
            self._seeds.pop(sid, None)
            self._voice.forget(sid)
            channel = self._channels.pop(sid, None)
            if channel is not None:
                channel.close()
                task = self._tasks.get(sid)
                if task is not None:
                    task.cancel()
        elif after.drivable and self._cfg.channel.auto_connect and self._owns(sid):
            self._channel(sid)

    def _channel(self, sid: str) -> SessionChannel:
        channel = self._channels.get(sid)
        if channel is None:
            channel = SessionChannel(sid, host=self, settings=self._channel_settings)
            channel.seed(self._seeds.pop(sid, []))
            self._channels[sid] = channel
            if self._tg is not None:
                self._spawn(channel)
        return channel

    def _spawn(self, channel: SessionChannel) -> None:
        assert self._tg is not None
        sid = channel.session_id
        if sid in self._tasks:
            return
        task = self._tg.create_task(channel.run(), name=f"ivh-channel:{sid}")
        self._tasks[sid] = task
        task.add_done_callback(lambda done: self._forget_channel(sid, channel, done))

    def _forget_channel(
        self, sid: str, channel: SessionChannel, task: asyncio.Task[None] | None = None
    ) -> None:
        if task is None or self._tasks.get(sid) is task:
            self._tasks.pop(sid, None)
        if self._channels.get(sid) is channel:
            del self._channels[sid]

    # ChannelHost
    def channel_url(self, session_id: str) -> str:
        """A command-channel URL signed now (requestid = SessionId, docs/protocol.md A.4)."""
        token = self._cfg.access_token.get_secret_value() if self._cfg.access_token else ""
        return channel_url(
            self._ws_base, appkey=self._cfg.appkey or "", access_token=token, session_id=session_id
        )

    async def session_open(self, session_id: str) -> bool:
        """Check `statsession` before reconnecting (docs/protocol.md A.4): False once closed or
        failed."""
        try:
            state = await self._refresh(session_id)
        except BridgeError as exc:
            return exc.code not in _GONE
        return not state.terminal

    def channel_state(self, session_id: str, state: dict[str, Any]) -> None:
        """Retain `<base>/ivh/<sid>/channel` (only the session's owner, in a cluster)."""
        if self._membership is not None and not self._owns(session_id):
            return
        self._publisher.set_retained(self._topics.ivh_channel(session_id), dumps(state))

    def downstream(self, session_id: str, event_type: str, data: dict[str, Any]) -> None:
        """Publish a downstream frame as an event."""
        self._voice.heard(session_id, event_type, data)
        self._emitter.emit("ivh", session_id, event_type, data)

    # -- session actions ----------------------------------------------------------------------
    @action("ivh/list_sessions")
    async def list_sessions(self, payload: Empty) -> dict[str, Any]:
        """List the account's live sessions (listsessionofuin) and refresh the retained states."""
        asked_at = time.monotonic()
        infos = await self._client.list_sessions()
        self._tracker.apply_list(infos, asked_at=asked_at)
        return {"sessions": [self._state_of(info).as_dict() for info in infos]}

    @action("ivh/create_session")
    async def create_session(self, payload: CreateSession) -> dict[str, Any]:
        """Create a session from a platform project (createsession)."""
        created = await self._client.create_session(
            virtualman_project_id=payload.virtualman_project_id,
            user_id=payload.user_id,
            protocol=payload.protocol,
            driver_type=payload.driver_type,
            extra=payload.extra(),
        )
        state = SessionState(
            session_id=created.session_id,
            status=status_name(created.session_status),
            status_code=created.session_status,
            started=False,
            driver_type=payload.driver_type,
            user_id=payload.user_id,
            play_stream_addr=created.play_stream_addr,
            updated_at=now_iso(),
            stream_max_interval=payload.stream_max_interval,
        )
        self._tracker.apply(state)
        return state.as_dict()

    @action("ivh/start_session")
    async def start_session(self, payload: SessionRef) -> dict[str, Any]:
        """Arm a ready session for driving (startsession); its channel opens if configured."""
        sid = payload.session_id
        await self._guard(self._client.start_session(sid), sid)
        state = self._tracker.get(sid) or await self._refresh(sid)
        state = replace(state, started=True, updated_at=now_iso())
        self._tracker.apply(state)
        return state.as_dict()

    @action("ivh/get_session")
    async def get_session(self, payload: SessionRef) -> dict[str, Any]:
        """Fetch a session's status now (statsession) and republish its state."""
        stat = await self._guard(self._client.stat_session(payload.session_id), payload.session_id)
        known = self._tracker.get(stat.session_id)
        state = self._apply_stat(stat)
        if state is known:  # unchanged, so not published: republished all the same
            self._tracker.republish(stat.session_id)
        extra = {"speak_status": stat.speak_status, "error_code": stat.error_code}
        return {**state.as_dict(), **extra, "error_message": stat.error_message}

    @action("ivh/close_session")
    async def close_session(self, payload: SessionRef) -> dict[str, Any]:
        """Close a session (closesession); its state shows closed at once."""
        await self._client.close_session(payload.session_id)
        self._tracker.mark_closed(payload.session_id)
        return {"session_id": payload.session_id, "status": "closed"}

    async def _refresh(self, sid: str) -> SessionState:
        return self._apply_stat(await self._guard(self._client.stat_session(sid), sid))

    def _apply_stat(self, stat: SessionStat) -> SessionState:
        known = self._tracker.get(stat.session_id)
        state = SessionState(
            session_id=stat.session_id,
            status=status_name(stat.session_status),
            status_code=stat.session_status,
            started=stat.is_session_started or bool(known and known.started),
            driver_type=known.driver_type if known else None,
            user_id=known.user_id if known else None,
            play_stream_addr=stat.play_stream_addr or (known.play_stream_addr if known else None),
            updated_at=now_iso(),
            stream_max_interval=known.stream_max_interval if known else None,
        )
        self._tracker.apply(state)
        return self._tracker.get(stat.session_id) or state

    async def _guard(self, call: Awaitable[T], sid: str) -> T:
        """Await an API call; a 'session closed' answer also marks the session closed."""
        try:
            return await call
        except UpstreamError as exc:
            if exc.code == "session_closed":
                self._tracker.mark_closed(sid)
            raise

    def _state_of(self, info: SessionInfo) -> SessionState:
        return self._tracker.get(info.session_id) or state_of(info)

    # -- drives -------------------------------------------------------------------------------
    @action("ivh/send_text")
    async def send_text(self, payload: SendText) -> dict[str, Any]:
        """Speak text (SEND_TEXT), paced >= text_interval apart per session."""
        _limit(payload.size, frames.SEND_TEXT_MAX_BYTES, "text")
        drive = ("SEND_TEXT", frames.new_req_id(), payload.data())
        req_id, _ = await self._drive(payload.session_id, lambda: [drive])
        return {"req_id": req_id}

    @action("ivh/stream_text")
    async def stream_text(self, payload: StreamText) -> dict[str, Any]:
        """Stream text (SEND_STREAMTEXT): one ReqId per utterance, Seq from 1, final -> IsFinal.
        A chunk over 1000 bytes goes out as several frames (see `frames.STREAM_TEXT_*`)."""
        _limit(payload.size, frames.STREAM_TEXT_MAX_BYTES, "text")
        sid, final = payload.session_id, payload.final
        parts = frames.pieces(payload.text, frames.STREAM_TEXT_FRAME_BYTES)
        last = len(parts) - 1

        def build() -> list[Drive]:
            chunk = self._utterances.chunk
            return [chunk(sid, text, final=final and i == last) for i, text in enumerate(parts)]

        req_id, data = await self._drive(sid, build)
        return {"req_id": req_id, "seq": data["Seq"], "final": final}

    @action("ivh/interrupt")
    async def interrupt(self, payload: SessionRef) -> dict[str, Any]:
        """Stop speaking: the documented empty-text interrupt (with a Seq inside a stream)."""
        sid = payload.session_id
        req_id, data = await self._drive(sid, lambda: [self._utterances.interrupt(sid)])
        return {"req_id": req_id, "command": "SEND_STREAMTEXT" if "Seq" in data else "SEND_TEXT"}

    @action("ivh/send_command")
    async def send_command(self, payload: SendCommand) -> dict[str, Any]:
        """Send any drive instruction, passed through (a new ReqId unless one is given)."""
        drive = (payload.command, payload.req_id or frames.new_req_id(), payload.data)
        req_id, _ = await self._drive(payload.session_id, lambda: [drive])
        return {"req_id": req_id}

    @action("ivh/send_audio", reply="when_asked")
    async def send_audio(self, payload: SendAudio) -> dict[str, Any] | None:
        """Speak audio (SEND_AUDIO, DriverType 3): a WAV paced, or the next live PCM piece."""
        clip = clip_of(payload.audio, mode=payload.mode, final=payload.final)
        sid = payload.session_id
        async with self._locks.setdefault(sid, asyncio.Lock()):  # in arrival order
            channel = await self._drivable_channel(sid)
            state = self._tracker.get(sid)
            if state is None or state.driver_type is None:  # statsession has no DriverType
                await self.poll_once()
                state = self._tracker.get(sid)
            _voice_session(state)
            reply = await self._voice.take(sid, channel, clip)
        return await reply

    async def _drive(self, sid: str, build: Build) -> tuple[str, dict[str, Any]]:
        """Check the session, build the drive and queue it in arrival order, then wait until
        it is on the socket; its ReqId and Data (of its last frame).

        `SEND_TEXT` drives (an interrupt too) are paced `text_interval` apart, plus a margin
        (docs/protocol.md A.5). A stream chunk may be several frames: they go out back to back.
        """
        lock = self._locks.setdefault(sid, asyncio.Lock())
        async with lock:  # FIFO: drives of one session keep their order across awaits
            channel = await self._drivable_channel(sid)
            channel.check_room()
            parts = build()
            await self._voice.before_drive(sid, channel, parts)  # A.5 ordering with audio
            roles = [frames.speech_role(command, data) for command, _, data in parts]
            command, req_id, data = parts[-1]
            item = channel.enqueue(
                *(frames.drive(sid, c, d, r) for c, r, d in parts),
                paced=command == "SEND_TEXT",
                speaks=req_id if any(starts for starts, _ in roles) else None,
                interrupt=any(interrupt for _, interrupt in roles),
            )
        wait = self._cfg.request_timeout + channel.queue_depth * channel.text_gap
        await channel.wait(item, wait)
        return req_id, data

    async def _drivable_channel(self, sid: str) -> SessionChannel:
        state = self._tracker.get(sid) or await self._refresh(sid)
        if state.terminal:
            raise UpstreamError(f"session {sid} is {state.status}", code="session_closed")
        if not state.started:
            raise ChannelError(
                "the session is not started: call ivh/start_session first", retryable=False
            )
        if state.status_code != 1:
            raise ChannelError(f"the session is {state.status}, not in progress yet")
        if not self._owns(sid):  # its owner holds the one socket Tencent allows (scale-out.md)
            raise ChannelError(f"another bridge instance drives session {sid} now; retry")
        return self._channel(sid)


def _limit(size: int, limit: int, field: str) -> None:
    if size > limit:
        raise RequestError(
            f"{field} is {size} bytes; Tencent's limit is {limit} bytes (UTF-8)",
            code="payload_too_large",
        )


def _voice_session(state: SessionState | None) -> None:
    """Audio drives only a DriverType 3 session (docs/protocol.md A.3, A.5)."""
    driver = state.driver_type if state is not None else None
    if driver != 3:
        known = f"DriverType {driver}" if driver is not None else "an unknown DriverType"
        raise RequestError(
            f"the session has {known}: audio needs a session created with driver_type 3"
        )


def _channel_settings(settings: Settings) -> ChannelSettings:
    ch = settings.ivh.channel
    return ChannelSettings(
        heartbeat_interval=ch.heartbeat_interval,
        text_interval=ch.text_interval,
        reconnect_max=ch.reconnect_max_delay,
        queue_size=ch.queue_size,
        open_timeout=settings.ivh.request_timeout,
    )


def build_ivh(deps: Deps) -> IvhFeature | None:
    """The IVH feature, or None (with a clear log line) when disabled or without credentials."""
    cfg = deps.settings.ivh
    if not cfg.enabled:
        log.info("ivh: disabled by configuration")
        return None
    if not cfg.has_credentials or cfg.access_token is None or cfg.appkey is None:
        log.warning("ivh: disabled: set ivh.appkey and ivh.access_token to enable it")
        return None
    http = deps.http_client(cfg.request_timeout)
    client = IvhClient(
        http,
        base_url=cfg.base_url,
        appkey=cfg.appkey,
        access_token=cfg.access_token,
        retry=deps.retry,
        observer=deps.observe_call,
    )
    return IvhFeature(deps=deps, client=client, http=http)
