"""Suppress a redelivered request (same action, transaction or correlation data, and payload)
within a window, answering it with the first one's response instead (issue 7,
docs/reliability.md)."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from bridge.core import jsontext

if TYPE_CHECKING:
    from bridge.core.requests import RequestContext

Reply = Callable[["RequestContext", "dict[str, Any] | None"], None]
_MAX_ENTRIES = 20_000  # at ~1 kB an answer: a bound of ~20 MB, whatever the window


class Deduplicator:
    """Remembers recent requests that carried a transaction or correlation data.

    What it keeps is bytes and floats in three dicts, nothing the garbage collector tracks:
    an object per remembered request (20,000 of them at 1,000 requests/s) made every young
    collection walk them all, 20 ms pauses under load.
    """

    def __init__(self, window: float) -> None:
        self._window = window
        self._expires: OrderedDict[bytes, float] = OrderedDict()  # oldest first
        self._answers: dict[bytes, bytes | None] = {}  # the serialised reply, once there is one
        self._waiters: dict[bytes, list[RequestContext]] = {}  # duplicates awaiting it
        self._reply: Reply | None = None

    def _key(self, ctx: RequestContext) -> bytes | None:
        if self._window <= 0 or (ctx.transaction is None and ctx.correlation_data is None):
            return None
        h = hashlib.blake2b(digest_size=16)
        for part in (ctx.action.encode(), ctx.correlation_data or b"", ctx.fingerprint):
            h.update(len(part).to_bytes(4, "big") + part)
        return h.digest()

    def seen(self, ctx: RequestContext, data: dict[str, Any]) -> bool:
        """Whether this request repeats one within the window; else remember it."""
        key = self._key(ctx)
        if key is None:
            return False
        now = time.monotonic()
        self._expire(now)
        if key in self._expires:
            return True
        self._expires[key] = now + self._window
        return False

    def follow(self, ctx: RequestContext, reply: Reply) -> None:
        """Answer a duplicate with the first request's response (now, or when it arrives)."""
        key = self._key(ctx)
        if key is None or key not in self._expires:
            return
        self._reply = reply
        if key in self._answers:
            reply(ctx, _as_duplicate(self._answers[key], ctx))
        else:
            self._waiters.setdefault(key, []).append(ctx)

    def finish(self, ctx: RequestContext, body: bytes | None) -> None:
        """Record the serialised response of a remembered request (None: it had none) and
        answer its waiting duplicates."""
        key = self._key(ctx)
        if key is None or key not in self._expires or key in self._answers:
            return
        self._answers[key] = body
        for waiter in self._waiters.pop(key, []):
            if self._reply is not None:
                self._reply(waiter, _as_duplicate(body, waiter))

    def _expire(self, now: float) -> None:
        expires = self._expires
        while expires and (len(expires) > _MAX_ENTRIES or next(iter(expires.values())) < now):
            key, _ = expires.popitem(last=False)
            self._answers.pop(key, None)
            self._waiters.pop(key, None)


def _as_duplicate(body: bytes | None, ctx: RequestContext) -> dict[str, Any] | None:
    if body is None:
        return None
    return {**jsontext.loads(body), "transaction": ctx.transaction, "duplicate": True}
