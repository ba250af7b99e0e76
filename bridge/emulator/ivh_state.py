"""IVH sessions in memory: lifecycle (docs/protocol.md A.3), idle closing (A.5), replay history
(A.4).

A session is created preparing (3) and becomes in progress (1) ``prepare_delay`` seconds later;
the transition is evaluated lazily whenever the session is read, so 10,000 sessions cost no
timers. Closed sessions leave the live index at once (the list APIs show live sessions only) but
``statsession`` still answers for them, with ``SessionStatus`` 2 and the reason in
``ErrorCode``/``ErrorMessage``, for ``closed_retention`` seconds (A.7: 110013 "use statsession to
see why"); after that they are unknown (110018).
"""

from __future__ import annotations

import logging
import secrets
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any, Protocol

from bridge.emulator.config import EmulatorConfig
from bridge.emulator.speech import Spawn, Speaker
from bridge.emulator.wire import dumps

logger = logging.getLogger(__name__)

# docs/protocol.md A.7 codes.
BAD_PARAMS = 100001
CONCURRENCY_LIMIT = 100008
CLOSED = 110013
NOT_READY = 110014
NOT_STARTED = 110016
NOT_FOUND = 110018
REPLACED = 110022
_REPLAY_DRIVES = 3  # A.4: the last 3 drive requests are re-pushed after a reconnect


class Status(IntEnum):
    """A.3 ``SessionStatus``."""

    IN_PROGRESS = 1
    CLOSED = 2
    PREPARING = 3
    FAILED = 4


class IvhError(Exception):
    """A business error answered in ``Header.Code`` (or a Type 9 ``ErrorCode``)."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class Outlet(Protocol):
    """Where a session's downstream frames go: its open command channel."""

    def send(self, frame: dict[str, Any], text: str) -> None:
        """Queue one frame (already serialised as ``text``)."""

    def close(self, code: int, reason: str) -> None:
        """Close after the queued frames, with a close frame."""

    def abort(self) -> None:
        """Cut the connection at once, without a close frame."""


def downstream_frame(payload: dict[str, Any]) -> dict[str, Any]:
    """Wrap a downstream payload in the envelope the channel sends (A.6)."""
    header = {"Code": 0, "Message": "", "RequestID": payload.get("ReqId", "")}
    return {"Header": header, "Payload": payload}


@dataclass(eq=False, kw_only=True)
class IvhSession:
    """One IVH session and its command-channel bookkeeping."""

    session_id: str
    user_id: str
    project_id: str = ""
    asset_key: str = ""
    protocol: str = "rtmp"
    driver_type: int = 1
    stream_max_interval: float = 2.0
    status: Status = Status.PREPARING
    ready_at: float | None = None
    started: bool = False
    error_code: int = 0
    error_message: str = ""
    last_activity: float = 0.0
    closed_at: float | None = None
    outlet: Outlet | None = None
    connects: int = 0
    speak_status: str = "Initial"
    speaker: Speaker | None = None
    history: OrderedDict[str, tuple[dict[str, Any], str]] = field(default_factory=OrderedDict)

    @property
    def live(self) -> bool:
        """Not closed."""
        return self.status != Status.CLOSED

    @property
    def play_stream_addr(self) -> str:
        """A plausible playback URL for the protocol (none for TRTC)."""
        if self.protocol == "trtc":
            return ""
        return f"{self.protocol}://emulator.invalid/live/{self.session_id}"

    def refresh(self, now: float) -> None:
        """Apply the preparing -> in progress transition if its time has come."""
        if self.status == Status.PREPARING and self.ready_at is not None and now >= self.ready_at:
            self.status = Status.IN_PROGRESS
            self.ready_at = None

    def emit(self, payload: dict[str, Any]) -> None:
        """Send one downstream payload to the channel, remembering speak status for replay."""
        payload = {"Type": payload.get("Type"), "SessionId": self.session_id, **payload}
        self.send_frame(downstream_frame(payload))

    def send_frame(self, frame: dict[str, Any]) -> bool:
        """Send a full frame if a channel is open; Type 3 frames are kept for the A.4 replay."""
        text = dumps(frame)
        payload = frame.get("Payload")
        if isinstance(payload, dict) and payload.get("Type") == 3:
            self._remember(payload, frame, text)
        if self.outlet is None:
            return False
        self.outlet.send(frame, text)
        return True

    def _remember(self, payload: dict[str, Any], frame: dict[str, Any], text: str) -> None:
        req_id = str(payload.get("ReqId", ""))
        self.speak_status = str(payload.get("SpeakStatus", self.speak_status))
        self.history.pop(req_id, None)
        self.history[req_id] = (frame, text)
        while len(self.history) > _REPLAY_DRIVES:
            self.history.popitem(last=False)

    def replay(self) -> list[tuple[dict[str, Any], str]]:
        """The latest speak-status frame of each of the last 3 drives, oldest first (A.4)."""
        return list(self.history.values())

    def list_item(self, *, driver_type_as: type = int) -> dict[str, Any]:
        """One ``Sessions[]`` entry of the list APIs (A.3)."""
        return {
            "UserId": self.user_id,
            "SessionId": self.session_id,
            "SessionStatus": int(self.status),
            "PlayStreamAddr": self.play_stream_addr,
            "DriverType": driver_type_as(self.driver_type),
            "IsSessionStarted": self.started,
            "VirtualmanType": "small_sample_2d",
            "CreateType": 1 if self.asset_key else 0,
            "VirtualmanKey": f"vk_{self.project_id or self.asset_key}",
            "AssetVirtualmanKey": self.asset_key,
            "VirtualmanProjectId": self.project_id,
        }

    def admin_view(self, now: float) -> dict[str, Any]:
        """The session as the admin API shows it."""
        return {
            "session_id": self.session_id,
            "user_id": self.user_id,
            "status": int(self.status),
            "started": self.started,
            "driver_type": self.driver_type,
            "protocol": self.protocol,
            "project_id": self.project_id,
            "connected": self.outlet is not None,
            "connects": self.connects,
            "speak_status": self.speak_status,
            "error_code": self.error_code,
            "error_message": self.error_message,
            "stream_max_interval_ms": round(self.stream_max_interval * 1000),
            "idle_seconds": round(now - self.last_activity, 3),
        }


class IvhRegistry:
    """Every IVH session: the live ones indexed by id and UserId, recently closed ones kept."""

    def __init__(
        self, config: EmulatorConfig, spawn: Spawn, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.config = config
        self._spawn = spawn
        self._clock = clock
        self.live: dict[str, IvhSession] = {}
        self.closed: OrderedDict[str, IvhSession] = OrderedDict()
        self._by_user: dict[str, str] = {}
        self._idle: OrderedDict[str, None] = OrderedDict()  # live ids, least recently active first
        self.serial = 0

    def now(self) -> float:
        """The registry's monotonic clock."""
        return self._clock()

    def create(self, *, user_id: str, status: Status | None = None, **fields: Any) -> IvhSession:
        """A new session; one with the same UserId is closed first (A.3, 110022)."""
        if len(self.live) >= self.config.max_sessions:
            raise IvhError(CONCURRENCY_LIMIT, "concurrency limit exceeded")
        previous = self._by_user.get(user_id)
        if previous is not None:
            message = "closed because another session was created with the same UserId"
            self.close(self.live[previous], code=REPLACED, message=message)
        session = IvhSession(session_id=secrets.token_hex(16), user_id=user_id, **fields)
        self._arm(session, status)
        self.live[session.session_id] = session
        self._by_user[user_id] = session.session_id
        self.touch(session)
        return session

    def _arm(self, session: IvhSession, status: Status | None) -> None:
        delay = self.config.prepare_delay
        if status is None:
            status = Status.PREPARING if delay > 0 else Status.IN_PROGRESS
            session.ready_at = self.now() + delay if delay > 0 else None
        elif status == Status.PREPARING:
            session.ready_at = self.now() + delay
        session.status = status
        session.speaker = Speaker(
            name=f"ivh-{session.session_id[:8]}",
            emit=session.emit,
            spawn=self._spawn,
            delay=self.config.speak_delay,
            max_interval=session.stream_max_interval,
            clock=self._clock,
        )

    def find(self, session_id: str) -> IvhSession | None:
        """A live or recently closed session, its status brought up to date."""
        session = self.live.get(session_id) or self.closed.get(session_id)
        if session is not None:
            session.refresh(self.now())
        return session

    def open_session(self, session_id: str) -> IvhSession:
        """A live session, or IvhError 110018 (unknown) / 110022 (replaced) / 110013 (closed)."""
        session = self.find(session_id)
        if session is None:
            raise IvhError(NOT_FOUND, "session does not exist")
        if not session.live:
            code = REPLACED if session.error_code == REPLACED else CLOSED
            raise IvhError(code, "session already closed")
        return session

    def start(self, session_id: str) -> IvhSession:
        """``startsession``: arm an in-progress session (110014 when it is not ready)."""
        session = self.open_session(session_id)
        if session.status != Status.IN_PROGRESS:
            raise IvhError(NOT_READY, "session not ready: SessionStatus must be 1")
        session.started = True
        self.touch(session)
        return session

    def close(self, session: IvhSession, *, code: int = 0, message: str = "") -> None:
        """Close a live session: its speech stops and its channel closes."""
        if not session.live:
            return
        sid = session.session_id
        session.status, session.closed_at = Status.CLOSED, self.now()
        session.error_code, session.error_message = code, message
        self.live.pop(sid, None)
        self._idle.pop(sid, None)
        if self._by_user.get(session.user_id) == sid:
            del self._by_user[session.user_id]
        self.closed[sid] = session
        if session.speaker is not None:
            session.speaker.stop()
        if session.outlet is not None:
            session.outlet.close(1000, f"session closed ({code or CLOSED})")
        self._trim_closed()
        logger.info("IVH session %s closed (code %d)", sid, code)

    def fail(self, session: IvhSession, *, code: int, message: str) -> None:
        """Move a live session to failed (4): it stays listed, its channel is cut."""
        session.status, session.ready_at = Status.FAILED, None
        session.error_code, session.error_message = code, message
        if session.speaker is not None:
            session.speaker.stop()
        if session.outlet is not None:
            session.outlet.close(1011, f"session failed ({code})")

    def touch(self, session: IvhSession) -> None:
        """Note drive or heartbeat traffic: it keeps the session from the idle close (A.5)."""
        session.last_activity = self.now()
        if session.live:
            self._idle[session.session_id] = None
            self._idle.move_to_end(session.session_id)

    def sweep(self) -> None:
        """Close sessions idle past ``session_idle_timeout``; forget old closed sessions."""
        now, timeout = self.now(), self.config.session_idle_timeout
        while self._idle:
            session = self.live[next(iter(self._idle))]
            if now - session.last_activity < timeout:
                break
            message = f"closed after {timeout:g} s without drive instructions"
            self.close(session, code=CLOSED, message=message)
        while self.closed:
            oldest = next(iter(self.closed.values()))
            if oldest.closed_at is None or now - oldest.closed_at < self.config.closed_retention:
                break
            self.closed.popitem(last=False)

    def _trim_closed(self) -> None:
        while len(self.closed) > self.config.max_closed_sessions:
            self.closed.popitem(last=False)

    def live_sessions(self) -> Iterator[IvhSession]:
        """Every live session, with its status brought up to date."""
        now = self.now()
        for session in self.live.values():
            session.refresh(now)
            yield session

    def reset(self) -> None:
        """Close every session and forget them all."""
        for session in list(self.live.values()):
            self.close(session, code=CLOSED, message="emulator reset")
        self.closed.clear()
