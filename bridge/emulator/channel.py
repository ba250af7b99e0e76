"""The command-channel WebSocket (docs/protocol.md A.4): one socket per started session.

``/v2/ws/ivh/interactdriver/interactdriverservice/commandchannel?appkey&requestid=<SessionId>
&timestamp&signature``, signed as A.2 with ``requestid`` included. A refused handshake is an
HTTP response (A.4 documents no close codes) whose body is the IVH envelope with the reason in
``Header.Code``:

- 401, 100005: missing, wrong or stale signature
- 404, 110018: unknown session
- 403, 110013 / 110022: session closed (110022 when replaced by a newer one with its UserId)
- 403, 110014: session preparing or failed; 403, 110016: never started
- 409, 110015: another socket is open for this session (that one keeps working)

Close codes the emulator sends: 1000 "session closed (<code>)" when the session closes, 1001
"idle timeout" after ``ws_idle_timeout`` without a valid instruction (A.5: 3 minutes), 1001 at
shutdown, 1011 when the session fails, 1013 if the client reads too slowly. An admin ``drop``
cuts the TCP connection without a close frame (1006 on the client). On every connect after the
first, the latest speak-status frame of each of the last 3 drives is sent again, byte for byte
(A.4), so a client can de-duplicate on ReqId + SpeakStatus + Seq.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Mapping
from typing import Any

from starlette.responses import JSONResponse
from starlette.websockets import WebSocket, WebSocketDisconnect

from bridge.emulator.auth import AuthError, check_ivh_query
from bridge.emulator.drives import DriveError, failed_payload, handle_frame
from bridge.emulator.ivh_state import NOT_READY, NOT_STARTED, IvhError, IvhSession, Status
from bridge.emulator.journal import parse_body
from bridge.emulator.state import EmulatorState
from bridge.emulator.wire import ivh_envelope

logger = logging.getLogger(__name__)

BUSY = 110015
OUTBOX_LIMIT = 4096


class Refused(Exception):
    """A handshake to refuse with an HTTP status and an IVH code."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message


async def command_channel(websocket: WebSocket) -> None:
    """The WebSocket endpoint: check the handshake, then serve the socket."""
    state = websocket.app.state.emulator
    assert isinstance(state, EmulatorState)
    try:
        session = _admit(state, websocket)
    except Refused as exc:
        websocket.state.emulator_code = exc.code
        body = ivh_envelope(exc.code, exc.message)
        await websocket.send_denial_response(JSONResponse(body, status_code=exc.status))
        return
    await Connection(websocket, session, state).serve()


def _admit(state: EmulatorState, websocket: WebSocket) -> IvhSession:
    """The session this handshake may open a channel for, or Refused."""
    query = websocket.query_params
    try:
        check_ivh_query(
            query,
            appkey=state.config.appkey,
            access_token=state.config.access_token,
            now=state.wall(),
            window=state.config.timestamp_window,
            channel=True,
        )
        session = state.ivh.open_session(query["requestid"])
    except AuthError as exc:
        raise Refused(401, exc.code, exc.message) from exc
    except IvhError as exc:
        raise Refused(404 if exc.code == 110018 else 403, exc.code, exc.message) from exc
    if not session.started:
        raise Refused(403, NOT_STARTED, "startsession must be called first")
    if session.status != Status.IN_PROGRESS:
        raise Refused(403, NOT_READY, "session not ready")
    if session.outlet is not None:
        raise Refused(409, BUSY, "another command channel is open for this session")
    return session


class Connection:
    """One accepted socket: a writer draining an outbox, a reader with an idle timeout."""

    def __init__(self, websocket: WebSocket, session: IvhSession, state: EmulatorState) -> None:
        self.ws = websocket
        self.session = session
        self.state = state
        self.sid = session.session_id
        self._outbox: asyncio.Queue[tuple[dict[str, Any], str] | None] = asyncio.Queue()
        self._close_with: tuple[int, str] | None = None
        self._aborted = False
        self._peer_gone = False
        self._tasks: list[asyncio.Task[None]] = []

    def send(self, frame: dict[str, Any], text: str) -> None:
        """Queue a frame; a client that falls far behind is disconnected (1013)."""
        if self._close_with is not None or self._aborted:
            return
        if self._outbox.qsize() >= OUTBOX_LIMIT:
            logger.warning("channel %s: client too slow, closing", self.sid)
            self.close(1013, "client too slow")
            return
        self.state.journal.record(
            "ws_out", size=len(text), path=self.ws.url.path, session_id=self.sid, frame=frame
        )
        self._outbox.put_nowait((frame, text))

    def close(self, code: int, reason: str) -> None:
        """Close with a close frame once the queued frames are sent."""
        if self._close_with is None and not self._aborted:
            self._close_with = (code, reason)
            self._outbox.put_nowait(None)

    def abort(self) -> None:
        """Cut the connection at once, as a network failure would."""
        self._aborted = True
        for task in self._tasks:
            task.cancel()

    async def serve(self) -> None:
        """Accept, replay after a reconnect, run until either side ends it."""
        await self.ws.accept()
        self._attach()
        reader = asyncio.create_task(self._read_loop(), name=f"channel-{self.sid[:8]}-read")
        writer = asyncio.create_task(self._write_loop(), name=f"channel-{self.sid[:8]}-write")
        self._tasks = [reader, writer]
        try:
            await asyncio.wait(self._tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in self._tasks:
                task.cancel()
            await asyncio.gather(*self._tasks, return_exceptions=True)
            self._detach()
        await self._finish()

    def _attach(self) -> None:
        self.session.outlet = self
        self.session.connects += 1
        self.state.channels[self.sid] = self
        logger.info("channel %s open (connect #%d)", self.sid, self.session.connects)
        if self.session.connects > 1:
            for frame, text in self.session.replay():
                self.send(frame, text)

    def _detach(self) -> None:
        if self.session.outlet is self:
            self.session.outlet = None
        if self.state.channels.get(self.sid) is self:
            del self.state.channels[self.sid]

    async def _finish(self) -> None:
        code, reason = self._close_with or (1006, "connection lost")
        if self._aborted:
            code, reason = 1006, "dropped"
        elif not self._peer_gone and self._close_with is not None:
            with contextlib.suppress(OSError, RuntimeError, WebSocketDisconnect):
                await self.ws.close(code, reason)
        self.state.journal.record(
            "ws_close", path=self.ws.url.path, session_id=self.sid, code=code, reason=reason
        )
        logger.info("channel %s closed: %d %s", self.sid, code, reason)

    async def _write_loop(self) -> None:
        while (item := await self._outbox.get()) is not None:
            try:
                await self.ws.send_text(item[1])
            except (OSError, RuntimeError, WebSocketDisconnect):
                self._peer_gone = True
                return

    async def _read_loop(self) -> None:
        """Frames until the peer goes, or until no valid instruction came for the idle timeout
        (A.5: "no heartbeat and no valid traffic"; a stream of bad frames keeps nothing open)."""
        timeout = self.state.config.ws_idle_timeout
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            try:
                async with asyncio.timeout_at(deadline):
                    message = await self.ws.receive()
            except TimeoutError:
                self.close(1001, f"idle timeout: no valid instruction for {timeout:g} s")
                return
            if message["type"] == "websocket.disconnect":
                self._peer_gone = True
                self._close_with = self._close_with or (message.get("code", 1006), "peer closed")
                return
            if self._on_message(message):
                deadline = loop.time() + timeout

    def _on_message(self, message: Mapping[str, Any]) -> bool:
        """Journal and carry out one frame; True when it was a valid instruction."""
        binary = message.get("text") is None
        text: str = (
            (message.get("bytes") or b"").decode("utf-8", "replace") if binary else message["text"]
        )
        self._journal_in(text)
        if binary:  # A.5: upstream frames are JSON text frames
            self.session.emit(failed_payload(DriveError("frames must be JSON text, not binary")))
            return False
        if not self.session.live:  # closed while connected: drives end the socket
            self.close(1000, f"session closed ({self.session.error_code or 110013})")
            return False
        if handle_frame(self.session, text):
            self.state.ivh.touch(self.session)
            return True
        return False

    def _journal_in(self, text: str) -> None:
        self.state.journal.record(
            "ws_in",
            size=len(text),
            path=self.ws.url.path,
            session_id=self.sid,
            frame=parse_body(text.encode()),
        )
