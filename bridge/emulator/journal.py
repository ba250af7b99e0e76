"""The journal: a bounded record of every API call and command-channel frame the emulator saw.

Entries are JSON objects ``{"index","ts","kind","path","session_id","query","body","status",
"code","fault"}`` with ``kind`` one of ``http``, ``ws_open``, ``ws_in``, ``ws_out``, ``ws_close``.
``index`` keeps increasing across clears, so a poller can ask for ``since=<last index + 1>``.
Secrets never enter it: ``signature`` and ``usersig`` are stripped from recorded query strings.
"""

from __future__ import annotations

import json
import time
from collections import Counter, deque
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.emulator.wire import parse_json

SECRET_PARAMS = frozenset({"signature", "usersig"})
_BODY_KEEP = 64 * 1024
_ENTRY_OVERHEAD = 256


def public_query(query: Mapping[str, str]) -> dict[str, str]:
    """The query parameters without any credential."""
    return {k: v for k, v in query.items() if k.lower() not in SECRET_PARAMS}


def parse_body(raw: bytes) -> Any:
    """The body as JSON when it parses, else its text (truncated), for the journal."""
    if not raw:
        return None
    if len(raw) > _BODY_KEEP:
        return {"_truncated": True, "size": len(raw)}
    try:
        return parse_json(raw)
    except ValueError:
        return raw[:1024].decode("utf-8", "replace")


class Stats:
    """Counts that outlive the bounded entries: API calls by path, and per session the command
    sockets opened, closed and refused (409 `busy`: a second socket tried while one is open)."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.sockets: dict[str, Counter[str]] = {}

    def count(self, kind: str, fields: Mapping[str, Any]) -> None:
        """Count one journal entry."""
        if kind == "http":
            self.calls[str(fields.get("path"))] += 1
            return
        sid = fields.get("session_id")
        if kind not in ("ws_open", "ws_close") or not isinstance(sid, str):
            return
        counts = self.sockets.setdefault(sid, Counter())
        if kind == "ws_close":
            counts["closed"] += 1
        elif fields.get("status") == 101:
            counts["opened"] += 1
        else:
            counts["refused_busy" if fields.get("status") == 409 else "refused"] += 1

    def view(self) -> dict[str, Any]:
        """``GET /emulator/stats``."""
        return {
            "calls": dict(sorted(self.calls.items())),
            "sockets": {sid: dict(c) for sid, c in sorted(self.sockets.items())},
        }


class Journal:
    """Last-N entries, also bounded by an approximate byte budget."""

    def __init__(self, *, max_entries: int = 100_000, max_bytes: int = 64 * 1024 * 1024) -> None:
        # Each entry is kept as plain values in parallel deques (its index, kind, path and
        # session id, what `entries` filters on, and the whole entry as JSON): nothing the
        # garbage collector tracks. An object per entry, even a tuple it stops tracking after
        # one look, counted towards every young collection: one per 50,000 entries, which then
        # walked them all (25 ms pauses under load).
        self._indexes: deque[int] = deque()
        self._kinds: deque[str] = deque()
        self._paths: deque[str | None] = deque()
        self._sids: deque[str | None] = deque()
        self._encoded: deque[bytes] = deque()
        self._columns = (self._indexes, self._kinds, self._paths, self._sids, self._encoded)
        self._costs: deque[int] = deque()
        self._max_entries = max_entries
        self._max_bytes = max_bytes
        self._bytes = 0
        self.next_index = 0
        self.stats = Stats()

    def __len__(self) -> int:
        return len(self._indexes)

    def record(self, kind: str, *, size: int = 0, **fields: Any) -> None:
        """Append one entry; ``size`` is the payload's byte count, for the memory bound."""
        self.stats.count(kind, fields)
        index = self.next_index
        entry = {"index": index, "ts": time.time(), "kind": kind, **fields}
        encoded = json.dumps(entry, default=str).encode()  # first: if it fails, nothing is kept
        path, sid = fields.get("path"), fields.get("session_id")
        self.next_index += 1
        self._indexes.append(index)
        self._kinds.append(kind)
        self._paths.append(path if isinstance(path, str) else None)
        self._sids.append(sid if isinstance(sid, str) else None)
        self._encoded.append(encoded)
        cost = size + _ENTRY_OVERHEAD
        self._costs.append(cost)
        self._bytes += cost
        while len(self._indexes) > self._max_entries or self._bytes > self._max_bytes:
            self._drop_oldest()

    def _drop_oldest(self) -> None:
        for column in self._columns:
            column.popleft()
        self._bytes -= self._costs.popleft()

    def entries(
        self,
        *,
        path: str | None = None,
        since: int = 0,
        kind: str | None = None,
        session_id: str | None = None,
        limit: int = 1000,
    ) -> list[dict[str, Any]]:
        """Entries from ``since`` on that match every given filter, oldest first."""
        found: list[dict[str, Any]] = []
        rows = zip(*self._columns, strict=True)
        for index, entry_kind, entry_path, sid, encoded in rows:
            if index < since or (kind and entry_kind != kind):
                continue
            if path and path not in (entry_path or ""):
                continue
            if session_id and sid != session_id:
                continue
            found.append(json.loads(encoded))
            if len(found) >= limit:
                break
        return found

    def clear(self) -> None:
        """Forget every entry and count (the index keeps counting)."""
        self.stats = Stats()
        for column in self._columns:
            column.clear()
        self._costs.clear()
        self._bytes = 0


def _session_of(body: Any) -> str | None:
    if not isinstance(body, dict):
        return None
    payload = body.get("Payload")
    source = payload if isinstance(payload, dict) else body
    sid = source.get("SessionId")
    return sid if isinstance(sid, str) else None


class JournalMiddleware:
    """Records every HTTP call and WebSocket handshake outside ``/emulator/``."""

    def __init__(self, app: ASGIApp, *, journal: Journal) -> None:
        self.app = app
        self.journal = journal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        path = scope.get("path", "")
        if scope["type"] not in ("http", "websocket") or path.startswith("/emulator/"):
            await self.app(scope, receive, send)
            return
        state: dict[str, Any] = scope.setdefault("state", {})
        # The server's own send callable knows the transport; the fault injector may abort it.
        state["emulator_transport_owner"] = getattr(send, "__self__", None)
        try:
            if scope["type"] == "websocket":
                await self.app(scope, receive, self._ws_send(scope, send))
            else:
                await self._http(scope, receive, send)
        finally:  # the owner holds the scope: a cycle per call, left to the collector's pauses
            del state["emulator_transport_owner"]

    async def _http(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = bytearray()
        status: list[int] = []

        async def receiving() -> Message:
            message = await receive()
            if message["type"] == "http.request" and len(body) <= _BODY_KEEP:
                body.extend(message.get("body", b""))
            return message

        async def sending(message: Message) -> None:
            if message["type"] == "http.response.start":
                status.append(message["status"])
            await send(message)

        try:
            await self.app(scope, receiving, sending)
        finally:
            self._record("http", scope, bytes(body), status[0] if status else None)

    def _ws_send(self, scope: Scope, send: Send) -> Send:
        async def sending(message: Message) -> None:
            if message["type"] == "websocket.accept":
                self._record("ws_open", scope, b"", 101)
            elif message["type"] == "websocket.http.response.start":
                self._record("ws_open", scope, b"", message["status"])
            await send(message)

        return sending

    def _record(self, kind: str, scope: Scope, raw: bytes, status: int | None) -> None:
        state = scope.get("state", {})
        query = _query_of(scope)
        body = parse_body(raw)
        self.journal.record(
            kind,
            size=len(raw),
            path=scope.get("path"),
            session_id=query.get("requestid") or _session_of(body),
            query=public_query(query),
            body=body,
            status=status,
            code=state.get("emulator_code"),
            fault=state.get("emulator_fault"),
        )


def _query_of(scope: Scope) -> dict[str, str]:
    raw = scope.get("query_string", b"").decode("latin-1")
    return dict(parse_qsl(raw, keep_blank_values=True))
