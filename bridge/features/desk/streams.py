"""Ordered, coalesced Desk stream messages (docs/design.md, docs/protocol.md B.4).

Per session: chunks go out in arrival order, one `send_stream_msg` in flight at a time. Chunks
that arrive while a call is in flight are joined into the next call, up to the 12 KB body limit
and never across a `finish`. The first call's MsgKey is used by the rest of the message; the
call carrying `finish` ends it, and the next chunk starts a new one (also when that call failed
in a way that may have ended it, a timeout or a dropped connection, or was the bridge's own idle
finish). Each chunk's future
resolves when the call that carried it succeeded, or fails with that call's error: a chunk is
sent once (the client never blindly retries a chunk, see `stream_retryable`).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from bridge.core import jsontext
from bridge.errors import BridgeError, RequestError
from bridge.tencent.desk import MAX_BODY_BYTES, stream_body_size
from bridge.tencent.transport import outcome_unknown

log = logging.getLogger(__name__)
MSG_KEY_ALLOWANCE = 128  # room kept for a MsgKey not known yet


class StreamSender(Protocol):
    """The one upstream call a stream needs."""

    def __call__(
        self, *, session_id: str, chunk: str, msg_key: str | None = None, finish: bool = False
    ) -> Awaitable[str | None]:
        """`send_stream_msg`; returns the MsgKey."""


Finished = Callable[[str, dict[str, Any]], None]


def escaped_len(text: str) -> int:
    """Bytes `text` takes inside a JSON string (escaping is per character, so it adds up)."""
    return len(jsontext.dumps(text).encode()) - 2


@dataclass(eq=False)
class _Chunk:
    text: str
    finish: bool
    size: int
    reason: str = "finish"
    done: asyncio.Future[dict[str, Any] | None] = field(default_factory=asyncio.Future)


@dataclass(frozen=True)
class _Batch:
    chunks: list[_Chunk]
    text: str
    finish: bool


class SessionStream:
    """The stream state of one Desk session."""

    def __init__(
        self,
        session_id: str,
        *,
        send: StreamSender,
        on_finished: Finished,
        max_queue: int,
    ) -> None:
        self.session_id = session_id
        self._send = send
        self._on_finished = on_finished
        self._max_queue = max_queue
        self._pending: deque[_Chunk] = deque()
        self._base = stream_body_size(session_id, "", "k" * MSG_KEY_ALLOWANCE, True)
        self.msg_key: str | None = None
        self.chunks = 0
        self.calls = 0
        self.last_activity = time.monotonic()
        self.running = False

    @property
    def open(self) -> bool:
        """Whether a message is started and not finished."""
        return self.msg_key is not None

    @property
    def depth(self) -> int:
        """Chunks waiting for a call."""
        return len(self._pending)

    def add(
        self, text: str, *, finish: bool, reason: str = "finish"
    ) -> asyncio.Future[dict[str, Any] | None]:
        """Queue a chunk (synchronously, so arrival order is kept); its future says how it went."""
        size = escaped_len(text)
        if self._base + size > MAX_BODY_BYTES:
            raise RequestError(
                f"chunk is {len(text.encode())} bytes; a send_stream_msg body is limited to "
                f"{MAX_BODY_BYTES} bytes by Tencent; send it in smaller chunks",
                code="payload_too_large",
            )
        if len(self._pending) >= self._max_queue:
            raise BridgeError(
                f"{len(self._pending)} chunks already wait for this session",
                code="rate_limited",
                retryable=True,
            )
        chunk = _Chunk(text, finish, size, reason)
        self._pending.append(chunk)
        self.last_activity = time.monotonic()
        return chunk.done

    async def drain(self) -> None:
        """Send everything queued, one call at a time; returns when the queue is empty."""
        self.running = True
        try:
            while self._pending:
                await self._send_batch(self._take())
        finally:
            self.running = False

    def _take(self) -> _Batch:
        chunks: list[_Chunk] = []
        used = self._base
        while self._pending:
            nxt = self._pending[0]
            if chunks and used + nxt.size > MAX_BODY_BYTES:
                break
            chunks.append(self._pending.popleft())
            used += nxt.size
            if nxt.finish:
                break
        return _Batch(chunks, "".join(c.text for c in chunks), chunks[-1].finish)

    async def _send_batch(self, batch: _Batch) -> None:
        try:
            key = await self._send(
                session_id=self.session_id,
                chunk=batch.text,
                msg_key=self.msg_key,
                finish=batch.finish,
            )
        except BridgeError as exc:
            _fail(batch.chunks, exc)
            if batch.finish and (outcome_unknown(exc) or batch.chunks[-1].reason == "idle"):
                self._abandon(batch.chunks[-1].reason, exc)
            return
        except Exception as exc:
            _fail(batch.chunks, BridgeError(f"send_stream_msg failed: {type(exc).__name__}"))
            raise
        self.last_activity = time.monotonic()
        self.msg_key = key or self.msg_key
        self.calls += 1
        self.chunks += len(batch.chunks)
        result = self._finish(batch.chunks[-1].reason) if batch.finish else None
        for chunk in batch.chunks:
            if not chunk.done.done():
                chunk.done.set_result(result if chunk.finish else None)

    def _finish(self, reason: str) -> dict[str, Any]:
        result = {"msg_key": self.msg_key, "chunks": self.chunks, "calls": self.calls}
        self._reset()
        self._on_finished(self.session_id, {**result, "reason": reason})
        return result

    def _abandon(self, reason: str, exc: BridgeError) -> None:
        """The finish failed and the message is given up: the next chunk starts a new one.

        After a timeout or a dropped connection the finish may have been applied, and every
        later chunk would carry a MsgKey whose message has ended; an idle finish has nobody to
        try it again. A finish the cloud refused for certain, or that was never sent, keeps the
        message open: sending `finish` again ends it.
        """
        log.warning(
            "desk: giving up the streamed message of %s (%s finish failed: %s)",
            self.session_id,
            reason,
            exc.message,
        )
        self._reset()

    def _reset(self) -> None:
        self.msg_key, self.chunks, self.calls = None, 0, 0

    def finish_for_move(self) -> asyncio.Future[dict[str, Any] | None] | None:
        """End the message before the session moves to another instance (docs/scale-out.md):
        an empty chunk with Finish, unless nothing is open or a finish is queued already."""
        if not (self.open or self._pending) or (self._pending and self._pending[-1].finish):
            return None
        done = self.add("", finish=True, reason="moved")
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        return done

    def drop(self, exc: BridgeError) -> None:
        """Forget everything without a call (fencing): queued chunks fail with `exc`; the
        message left open is not finished, the next chunk starts a new one."""
        _fail(list(self._pending), exc)
        self._pending.clear()
        self._reset()

    def idle_finish(self) -> asyncio.Future[dict[str, Any] | None]:
        """End an open message that has been quiet too long (an empty chunk with Finish)."""
        done = self.add("", finish=True, reason="idle")
        done.add_done_callback(lambda f: f.cancelled() or f.exception())
        return done


def _fail(chunks: list[_Chunk], exc: BridgeError) -> None:
    for chunk in chunks:
        if not chunk.done.done():
            chunk.done.set_exception(exc)
