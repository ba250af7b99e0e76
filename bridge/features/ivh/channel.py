"""One session's command channel (docs/protocol.md A.4-A.6, docs/design.md).

At most one WebSocket per session. The loop signs a fresh URL per attempt (the timestamp must
be within 5 minutes), reconnects with backoff while the session is open (asking the host, which
checks `statsession`), and stops for good when it is closed. Drives wait in an ordered, bounded
queue across reconnects; `SEND_TEXT` drives leave it more than `text_interval` apart. Speak-status
frames the cloud re-sends after a reconnect are recognised by their key and not published twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import (
    ConnectionClosed,
    InvalidStatus,
    InvalidURI,
    WebSocketException,
)
from websockets.proxy import get_proxy
from websockets.uri import WebSocketURI, parse_uri

from bridge.core.backoff import backoff
from bridge.core.condition import Condition
from bridge.errors import ChannelError
from bridge.features.ivh.frames import heartbeat, parse_downstream, replay_key

log = logging.getLogger(__name__)
_REPLAY_MEMORY = 512
HANDED_OVER = 32  # replay keys passed to a new owner (the cloud re-sends its last 3 drives')
# Tencent wants text drives *more than* 1 s apart as it receives them (A.5): a margin on top of
# `text_interval` (a tenth of it, at most 0.1 s), so network jitter cannot bring two closer.
_PACE_MARGIN = 0.1
# The channel's calling protocol lists this header for the handshake (seed 004).
_HANDSHAKE_HEADERS = {"Content-Type": "application/json;charset=utf-8"}
_SPEECH_BEGUN = frozenset(
    {"TextStart", "AudioStart", "SentenceStart", "TextOver", "AudioOver", "Error"}
)


def channel_proxy(url: str) -> str | Literal[True] | None:
    """The proxy for a command-channel URL, chosen by websockets' own rules (`get_proxy`: the
    `*_proxy` and `no_proxy` environment) but once per host, not on every connect: the lookup
    walks the whole environment, 0.1-0.3 ms of CPU a socket here, more in a larger one. Should
    that helper ever fail (it is websockets' internal), True: `connect` looks it up itself."""
    try:
        uri = parse_uri(url)
        return _proxy_for(uri.secure, uri.host, uri.port)
    except Exception:
        log.debug("proxy lookup failed; websockets will look it up", exc_info=True)
        return True


@functools.lru_cache(maxsize=16)
def _proxy_for(secure: bool, host: str, port: int) -> str | None:
    return get_proxy(WebSocketURI(secure=secure, host=host, port=port, path="/", query=""))


class ChannelHost(Protocol):
    """What a channel needs from the IVH feature."""

    def channel_url(self, session_id: str) -> str:
        """A freshly signed command-channel URL."""

    async def session_open(self, session_id: str) -> bool:
        """Whether the session may still be driven (not closed or failed)."""

    def channel_state(self, session_id: str, state: dict[str, Any]) -> None:
        """Publish the retained channel state."""

    def downstream(self, session_id: str, event_type: str, data: dict[str, Any]) -> None:
        """Publish one downstream frame as an event."""

    # Optional: `async def channel_gate(session_id)`, awaited before the first socket (a
    # cluster's new owner waits there for the previous owner's release, docs/scale-out.md).


@dataclass(frozen=True, kw_only=True)
class ChannelSettings:
    """Timing of one channel."""

    heartbeat_interval: float = 40.0
    text_interval: float = 1.0
    reconnect_initial: float = 0.5
    reconnect_max: float = 30.0
    queue_size: int = 100
    open_timeout: float = 10.0
    speech_start_timeout: float = 5.0


@dataclass(eq=False)
class _Drive:
    frames: tuple[str, ...]  # sent back to back: once the first is out, the rest follow
    paced: bool
    speaks: str | None = None  # the ReqId of a drive that makes the avatar speak
    interrupt: bool = False
    sent: int = 0  # frames on the socket so far
    done: asyncio.Future[None] = field(default_factory=asyncio.Future)


class SessionChannel:
    """The command channel of one session."""

    def __init__(self, session_id: str, *, host: ChannelHost, settings: ChannelSettings) -> None:
        self.session_id = session_id
        self._host = host
        self._settings = settings
        self._queue: deque[_Drive] = deque()
        self._wake = asyncio.Event()
        self._connected = asyncio.Event()
        self._send_lock = asyncio.Lock()
        self._seen: dict[tuple[Any, ...], int] = {}  # replay key -> the connection it came on
        self._last_text = 0.0
        self._starting: set[str] = set()  # spoken drives sent whose TextStart is not seen yet
        self._started = asyncio.Event()
        self._started.set()
        self._closed = False
        self._lost: asyncio.Future[None] | None = None
        self.state = "connecting"
        self.connects = 0
        self._condition = Condition(name=f"ivh channel {session_id}", logger=log, up=None)

    @property
    def connected(self) -> bool:
        """Whether a socket is open now."""
        return self._connected.is_set()

    def socket_lost(self) -> asyncio.Future[None]:
        """Resolved when the socket that carries what is queued now closes: the open one, else
        the next (a paced audio utterance ends with its socket, docs/voice.md)."""
        if self._lost is None or self._lost.done():
            self._lost = asyncio.get_running_loop().create_future()
        return self._lost

    @property
    def queue_depth(self) -> int:
        """Drives waiting to be sent."""
        return len(self._queue)

    # -- the connection loop ---------------------------------------------------------------------
    async def run(self) -> None:
        """Connect and reconnect until the session closes or `close()` is called."""
        attempt, reason = 0, None
        delays = self._delays()
        try:
            gate = getattr(self._host, "channel_gate", None)
            if gate is not None:  # a moved session: the previous owner closes first
                await gate(self.session_id)
            while not self._closed:
                if attempt and not await self._host.session_open(self.session_id):
                    reason = "session closed"
                    break
                self._set_state("reconnecting" if attempt else "connecting", attempt, reason)
                before = self.connects
                reason = await self._connect_once()
                if not self._closed:  # it reconnects: said once per reason, not per attempt
                    self._condition.failed(reason, reason)
                if self.connects > before:  # it was up: count attempts afresh
                    attempt, delays = 0, self._delays()
                attempt += 1
                if not self._closed:
                    await asyncio.sleep(next(delays))
        finally:
            self._shutdown(reason or "closed")

    def _delays(self) -> Iterator[float]:
        return backoff(self._settings.reconnect_initial, self._settings.reconnect_max)

    async def _connect_once(self) -> str:
        """One socket's life; returns why it ended."""
        url = self._host.channel_url(self.session_id)
        try:
            # No permessage-deflate: the frames are small JSON, and each socket would keep a
            # zlib context and inflate every frame (CPU and RSS per channel, see bench/events).
            async with connect(
                url,
                additional_headers=_HANDSHAKE_HEADERS,
                proxy=channel_proxy(url),
                open_timeout=self._settings.open_timeout,
                close_timeout=2,
                max_size=2**22,
                compression=None,
            ) as ws:
                self.connects += 1
                lost = self.socket_lost()
                self._connected.set()
                self._condition.ok()
                self._set_state("connected", 0, None)
                try:
                    return await self._serve(ws)
                finally:
                    lost.set_result(None)
        except InvalidStatus as exc:
            return f"refused: HTTP {exc.response.status_code}"
        except InvalidURI:  # its text holds the signed URL: never in a log or a topic
            return "InvalidURI: the command-channel URL is not a ws:// or wss:// URL"
        except (OSError, TimeoutError, WebSocketException) as exc:
            return f"{type(exc).__name__}: {exc}"[:200]
        finally:
            self._connected.clear()

    async def _serve(self, ws: ClientConnection) -> str:
        tasks = [
            asyncio.create_task(self._read(ws), name=f"ivh-read:{self.session_id}"),
            asyncio.create_task(self._write(ws), name=f"ivh-write:{self.session_id}"),
            asyncio.create_task(self._heartbeat(ws), name=f"ivh-heartbeat:{self.session_id}"),
        ]
        try:
            done, _ = await asyncio.wait(tasks, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
        for task in done:
            exc = task.exception()
            if exc is not None and not isinstance(exc, ConnectionClosed):
                log.warning("ivh channel %s: %r", self.session_id, exc)
        code, why = ws.close_code, ws.close_reason
        return f"socket closed ({code}{': ' + why if why else ''})"

    async def _read(self, ws: ClientConnection) -> None:
        async for raw in ws:
            frame = parse_downstream(raw)
            if frame.replay_key is not None and self._replayed(frame.replay_key):
                continue  # re-sent after a reconnect (docs/protocol.md A.4)
            self._note_speech(frame.event_type, frame.data)
            self._host.downstream(self.session_id, frame.event_type, frame.data)

    def _note_speech(self, event_type: str, data: dict[str, Any]) -> None:
        """A drive has started speaking (or failed): an interrupt may now be sent."""
        req_id, status = data.get("req_id"), data.get("speak_status")
        if not isinstance(req_id, str) or req_id not in self._starting:
            return  # (a list or an object in a frame's field is no id, and is unhashable)
        if event_type == "drive_failed" or (isinstance(status, str) and status in _SPEECH_BEGUN):
            self._starting.discard(req_id)
            if not self._starting:
                self._started.set()

    def recent_replays(self) -> list[list[Any]]:
        """The latest replay keys seen, for the next owner of the session (a move)."""
        return [list(key) for key in list(self._seen)[-HANDED_OVER:]]

    def seed(self, keys: list[Any]) -> None:
        """Replay keys the previous owner saw: frames with them are the cloud's re-sends."""
        for parts in keys:
            if (key := replay_key(parts)) is not None:
                self._seen.setdefault(key, 0)  # before this channel's first connection

    def _replayed(self, key: tuple[Any, ...]) -> bool:
        """A frame first seen on an earlier connection: the cloud's re-send after a reconnect.
        Frames alike on one connection are all published: the cloud's replay is the only
        duplicate documented, and `Seq` may repeat within a stream (it numbers clauses)."""
        first = self._seen.get(key)
        if first is not None:
            return first < self.connects
        if len(self._seen) >= _REPLAY_MEMORY:
            del self._seen[next(iter(self._seen))]
        self._seen[key] = self.connects
        return False

    async def _write(self, ws: ClientConnection) -> None:
        while True:
            while not self._queue:
                self._wake.clear()
                await self._wake.wait()
            item = self._queue[0]
            if item.done.done() and not item.sent:  # its requester gave up waiting
                self._queue.popleft()
                continue
            if item.paced and not item.sent:
                await self._pace()
            if item.interrupt and not item.sent:
                await self._until_speech_started()
            while item.sent < len(item.frames):  # after a reconnect: from the first not sent
                await self._send(ws, item.frames[item.sent])
                item.sent += 1
            self._queue.popleft()
            if item.speaks:
                self._starting.add(item.speaks)
                self._started.clear()
            if item.paced:
                self._last_text = time.monotonic()
            if not item.done.done():
                item.done.set_result(None)

    async def _until_speech_started(self) -> None:
        """docs/protocol.md A.5: send an interrupt only after TextStart (bounded: a lost frame)."""
        try:
            await asyncio.wait_for(self._started.wait(), self._settings.speech_start_timeout)
        except TimeoutError:
            self._starting.clear()
            self._started.set()

    @property
    def text_gap(self) -> float:
        """Seconds from one `SEND_TEXT` drive to the next: `text_interval` and the margin."""
        interval = self._settings.text_interval
        return interval + min(_PACE_MARGIN, interval / 10)

    async def _pace(self) -> None:
        wait = self._last_text + self.text_gap - time.monotonic()
        if wait > 0:
            await asyncio.sleep(wait)

    async def _heartbeat(self, ws: ClientConnection) -> None:
        while True:
            await asyncio.sleep(self._settings.heartbeat_interval)
            await self._send(ws, heartbeat(self.session_id))

    async def _send(self, ws: ClientConnection, frame: str) -> None:
        async with self._send_lock:
            await ws.send(frame)

    # -- drives ----------------------------------------------------------------------------------
    def enqueue(
        self, *frames: str, paced: bool, speaks: str | None = None, interrupt: bool = False
    ) -> _Drive:
        """Queue a drive behind the ones already waiting (synchronously: order is kept). Its
        frames go out back to back, none of them once its requester has given up.

        `speaks` is the ReqId of a drive that starts speech; an `interrupt` waits for it.
        """
        self.check_room()
        item = _Drive(frames, paced, speaks, interrupt)
        self._queue.append(item)
        self._wake.set()
        return item

    def check_room(self) -> None:
        """Raise unless a drive can be queued now (before it is built: a streamed chunk's Seq
        is taken when it is built, and a refused chunk must not leave a gap)."""
        if self._closed:
            raise ChannelError("the command channel is closed", retryable=False)
        if len(self._queue) >= self._settings.queue_size:
            raise ChannelError(f"{len(self._queue)} drives are already waiting for this session")

    async def wait(self, item: _Drive, wait: float) -> None:
        """Wait until a queued drive is on the socket (at most `wait` seconds)."""
        try:
            await asyncio.wait_for(asyncio.shield(item.done), wait)
        except TimeoutError:
            item.done.cancel()
            raise ChannelError(
                f"the command channel did not take the drive within {wait:g}s ({self.state})"
            ) from None

    # -- state -----------------------------------------------------------------------------------
    def _set_state(self, state: str, attempt: int, reason: str | None) -> None:
        self.state = state
        self._host.channel_state(
            self.session_id, {"state": state, "attempt": attempt, "reason": reason}
        )

    def close(self) -> None:
        """Stop reconnecting; `run()` ends and publishes `closed`."""
        self._closed = True

    def _shutdown(self, reason: str) -> None:
        self._closed = True
        for item in self._queue:
            if not item.done.done():
                item.done.set_exception(ChannelError("the command channel closed", retryable=False))
                with contextlib.suppress(asyncio.InvalidStateError):
                    item.done.exception()  # mark retrieved: the requester may be gone
        self._queue.clear()
        self._set_state("closed", 0, reason)
