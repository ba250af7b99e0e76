"""Suppress a redelivered request (same action, transaction or correlation data, and payload)
within a window, answering it with the first one's response instead (issue 7, SPEC 3.5)."""

from __future__ import annotations

import hashlib
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from bridge.requests import RequestContext

Reply = Callable[["RequestContext", "dict[str, Any] | None"], None]
_MAX_ENTRIES = 20_000  # at ~1 kB an answer: a bound of ~20 MB, whatever the window


class _Entry:
    __slots__ = ("done", "envelope", "expires", "waiters")

    def __init__(self, expires: float) -> None:
        self.expires = expires
        self.done = False
        self.envelope: dict[str, Any] | None = None
        self.waiters: list[RequestContext] = []


class Deduplicator:
    """Remembers recent requests that carried a transaction or correlation data."""

    def __init__(self, window: float) -> None:
        self._window = window
        self._entries: OrderedDict[bytes, _Entry] = OrderedDict()
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
        if key in self._entries:
            return True
        self._entries[key] = _Entry(now + self._window)
        return False

    def follow(self, ctx: RequestContext, reply: Reply) -> None:
        """Answer a duplicate with the first request's response (now, or when it arrives)."""
        key = self._key(ctx)
        entry = self._entries.get(key) if key else None
        if entry is None:
            return
        self._reply = reply
        if entry.done:
            reply(ctx, _as_duplicate(entry.envelope, ctx))
        else:
            entry.waiters.append(ctx)

    def finish(self, ctx: RequestContext, envelope: dict[str, Any] | None) -> None:
        """Record the response of a remembered request and answer its waiting duplicates."""
        key = self._key(ctx)
        entry = self._entries.get(key) if key else None
        if entry is None or entry.done:
            return
        entry.done, entry.envelope = True, envelope
        waiters, entry.waiters = entry.waiters, []
        for waiter in waiters:
            if self._reply is not None:
                self._reply(waiter, _as_duplicate(envelope, waiter))

    def _expire(self, now: float) -> None:
        entries = self._entries
        while entries and (
            len(entries) > _MAX_ENTRIES or next(iter(entries.values())).expires < now
        ):
            entries.popitem(last=False)


def _as_duplicate(envelope: dict[str, Any] | None, ctx: RequestContext) -> dict[str, Any] | None:
    if envelope is None:
        return None
    return {**envelope, "transaction": ctx.transaction, "duplicate": True}
