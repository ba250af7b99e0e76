"""Fault injection: the next N calls (or WebSocket connects) whose path contains a substring fail.

A fault may add latency (the call is processed, its answer is delayed), answer an HTTP status
with a small text body, answer HTTP 200 with a business error code in the API's own envelope
(``Header.Code`` for IVH, ``ErrorCode`` for Desk), or drop the connection without an answer.
On the command channel, a fault refuses the handshake (HTTP 503 by default, the given status,
or HTTP 403 with the IVH envelope for ``error_code``); ``drop`` accepts it and then cuts the TCP
connection without a close frame, like a network failure. A fault with only ``latency_ms``
delays the answer (or the handshake) and lets the call through; a fault with none of these
answers HTTP 503.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from dataclasses import asdict, dataclass
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bridge.emulator.wire import dumps, error_envelope

logger = logging.getLogger(__name__)


class FaultSpec(BaseModel):
    """The admin request body of ``POST /emulator/faults``."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    path: str = Field(min_length=1, max_length=300)
    count: int = Field(default=1, ge=1, le=1_000_000)
    latency_ms: int = Field(default=0, ge=0, le=600_000)
    http_status: int | None = Field(default=None, ge=200, le=599)
    error_code: int | None = None
    error_message: str | None = Field(default=None, max_length=1000)
    drop: bool = False


@dataclass(kw_only=True)
class Fault:
    """One armed fault and how many matching calls it still applies to."""

    id: int
    path: str
    remaining: int
    latency_ms: int
    http_status: int | None
    error_code: int | None
    error_message: str | None
    drop: bool

    @property
    def answers(self) -> bool:
        """Whether this fault answers the call itself instead of letting it through."""
        return self.drop or self.http_status is not None or self.error_code is not None

    def to_dict(self) -> dict[str, Any]:
        """The fault as JSON."""
        return asdict(self)


class FaultBook:
    """The armed faults, consumed in the order they were added."""

    def __init__(self) -> None:
        self._faults: list[Fault] = []
        self._ids = itertools.count(1)

    def add(self, spec: FaultSpec) -> Fault:
        """Arm a fault."""
        fault = Fault(
            id=next(self._ids), remaining=spec.count, **spec.model_dump(exclude={"count"})
        )
        if not fault.answers and not fault.latency_ms:
            fault.http_status = 503  # a fault with no effect given refuses the call
        self._faults.append(fault)
        return fault

    def take(self, path: str) -> Fault | None:
        """The first armed fault matching ``path``, with one use consumed."""
        for fault in self._faults:
            if fault.path in path:
                fault.remaining -= 1
                if fault.remaining <= 0:
                    self._faults.remove(fault)
                return fault
        return None

    def list(self) -> list[dict[str, Any]]:
        """The armed faults as JSON."""
        return [f.to_dict() for f in self._faults]

    def clear(self) -> None:
        """Disarm every fault."""
        self._faults.clear()


class FaultMiddleware:
    """Applies armed faults to every call outside ``/emulator/``."""

    def __init__(self, app: ASGIApp, *, book: FaultBook) -> None:
        self.app = app
        self.book = book

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """ASGI entry point."""
        path = scope.get("path", "")
        fault = None
        if scope["type"] in ("http", "websocket") and not path.startswith("/emulator/"):
            fault = self.book.take(path)
        if fault is None:
            await self.app(scope, receive, send)
            return
        logger.info("injecting fault %d on %s", fault.id, path)
        state: dict[str, Any] = scope.setdefault("state", {})
        state["emulator_fault"] = fault.id
        if not fault.answers:
            await self.app(scope, receive, _delayed(send, fault.latency_ms / 1000))
            return
        await asyncio.sleep(fault.latency_ms / 1000)
        if fault.drop:
            await _drop(scope, receive, send)
        elif scope["type"] == "websocket":
            await _refuse(scope, receive, send, fault)
        else:
            await _answer(scope, send, fault)


def _delayed(send: Send, delay: float) -> Send:
    first = [True]

    async def sending(message: Message) -> None:
        if first[0]:
            first[0] = False
            await asyncio.sleep(delay)
        await send(message)

    return sending


def _fault_body(scope: Scope, fault: Fault) -> tuple[int, bytes, bytes]:
    """(status, content type, body) of an answering fault."""
    message = fault.error_message or "injected fault"
    if fault.error_code is not None:
        scope["state"]["emulator_code"] = fault.error_code
        status = 403 if scope["type"] == "websocket" else 200
        body = error_envelope(scope["path"], fault.error_code, message)
        return status, b"application/json", dumps(body).encode()
    status = fault.http_status or 503
    return status, b"text/plain; charset=utf-8", f"{message}: HTTP {status}".encode()


async def _answer(scope: Scope, send: Send, fault: Fault) -> None:
    status, content_type, body = _fault_body(scope, fault)
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


async def _refuse(scope: Scope, receive: Receive, send: Send, fault: Fault) -> None:
    await receive()  # websocket.connect
    status, content_type, body = _fault_body(scope, fault)
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    await send({"type": "websocket.http.response.start", "status": status, "headers": headers})
    await send({"type": "websocket.http.response.body", "body": body})


async def _drop(scope: Scope, receive: Receive, send: Send) -> None:
    """Cut the TCP connection without an answer (after the handshake, for a WebSocket)."""
    owner = scope["state"].get("emulator_transport_owner")
    transport = getattr(owner, "transport", None)
    if transport is None:  # not served by uvicorn: the nearest thing is a gateway error
        await _answer(scope, send, _BAD_GATEWAY)
        return
    if scope["type"] == "websocket":
        await receive()
        await send({"type": "websocket.accept"})
    transport.abort()
    # Let the server notice the lost connection, so it does not complain of a missing answer.
    for _ in range(10):
        if getattr(owner, "disconnected", True):
            break
        await asyncio.sleep(0)


_BAD_GATEWAY = Fault(
    id=0,
    path="",
    remaining=0,
    latency_ms=0,
    http_status=502,
    error_code=None,
    error_message="connection drop unsupported",
    drop=False,
)
