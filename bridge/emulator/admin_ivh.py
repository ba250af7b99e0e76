"""Admin endpoints for IVH sessions and their sockets (listed in admin.py)."""

from __future__ import annotations

import logging
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.emulator.admin import AdminError, admin_endpoint, parse_model
from bridge.emulator.ivh_api import emulator_state
from bridge.emulator.ivh_state import IvhSession, Status, downstream_frame
from bridge.emulator.state import EmulatorState

logger = logging.getLogger(__name__)


class BulkSessions(BaseModel):
    """``POST /emulator/ivh/sessions``: many sessions at once (benchmarks, fixtures)."""

    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=1, ge=1, le=100_000)
    status: Literal[1, 3, 4] = 1
    started: bool = True
    user_id_prefix: str = Field(default="u", max_length=64)
    project_id: str = Field(default="emulator-project", max_length=128)
    driver_type: Literal[1, 3] = 1
    protocol: Literal["rtmp", "trtc", "webrtc"] = "rtmp"
    # Milliseconds; unlike createsession (2000..6000, A.3) any value, so tests can be fast.
    stream_max_interval: int = Field(default=2000, ge=1, le=600_000)


class StatusChange(BaseModel):
    """``POST /emulator/ivh/sessions/{sid}/status``."""

    model_config = ConfigDict(extra="forbid")

    status: Literal[1, 2, 3, 4]
    started: bool | None = None
    error_code: int | None = None
    error_message: str | None = Field(default=None, max_length=1000)


class Push(BaseModel):
    """A frame to push: a full frame, or a payload to wrap in the downstream envelope."""

    model_config = ConfigDict(extra="forbid")

    frame: dict[str, Any]
    sessions: list[str] | None = None


class Drop(BaseModel):
    """An optional clean close instead of a cut."""

    model_config = ConfigDict(extra="forbid")

    code: int | None = Field(default=None, ge=1000, le=4999)
    reason: str = Field(default="closed by the emulator admin", max_length=120)


def _session(state: EmulatorState, session_id: str) -> IvhSession:
    session = state.ivh.find(session_id)
    if session is None:
        raise AdminError(404, f"no IVH session {session_id}")
    return session


@admin_endpoint
async def bulk_create(request: Request) -> JSONResponse:
    """Create ``count`` sessions with unique UserIds (``<prefix><serial>``)."""
    spec = await parse_model(request, BulkSessions)
    state = emulator_state(request)
    if len(state.ivh.live) + spec.count > state.config.max_sessions:
        raise AdminError(409, "that many sessions would exceed max_sessions")
    created = [_create_one(state, spec) for _ in range(spec.count)]
    logger.info("admin created %d IVH sessions", len(created))
    return JSONResponse(
        {"session_ids": [s.session_id for s in created], "user_ids": [s.user_id for s in created]}
    )


def _create_one(state: EmulatorState, spec: BulkSessions) -> IvhSession:
    state.ivh.serial += 1
    session = state.ivh.create(
        user_id=f"{spec.user_id_prefix}{state.ivh.serial}",
        status=Status(spec.status),
        project_id=spec.project_id,
        protocol=spec.protocol,
        driver_type=spec.driver_type,
        stream_max_interval=spec.stream_max_interval / 1000,
    )
    session.started = spec.started
    if session.status == Status.FAILED:
        session.error_code, session.error_message = -111004, "stream creation failed"
    return session


@admin_endpoint
async def change_status(request: Request) -> JSONResponse:
    """Move a live session: 1 in progress, 2 closed, 3 preparing (until moved), 4 failed."""
    change = await parse_model(request, StatusChange)
    state = emulator_state(request)
    session = _session(state, request.path_params["sid"])
    if not session.live:
        raise AdminError(409, "the session is closed")
    if change.status == 2:
        message = change.error_message or "closed by the emulator admin"
        state.ivh.close(session, code=change.error_code or 0, message=message)
    elif change.status == 4:
        message = change.error_message or "stream creation failed"
        state.ivh.fail(session, code=change.error_code or -111004, message=message)
    else:
        session.status, session.ready_at = Status(change.status), None
    if change.started is not None:
        session.started = change.started
    return JSONResponse(session.admin_view(state.ivh.now()))


def _frame_for(session: IvhSession, frame: dict[str, Any]) -> dict[str, Any]:
    if "Payload" in frame or "Header" in frame:
        return frame
    return downstream_frame({"SessionId": session.session_id, **frame})


@admin_endpoint
async def push_one(request: Request) -> JSONResponse:
    """Push one frame to a session's socket."""
    push = await parse_model(request, Push)
    state = emulator_state(request)
    session = _session(state, request.path_params["sid"])
    if not session.send_frame(_frame_for(session, push.frame)):
        raise AdminError(404, "the session has no open socket")
    return JSONResponse({"sent": 1})


@admin_endpoint
async def push_many(request: Request) -> JSONResponse:
    """Push one frame to the listed sessions' sockets, or to every open socket."""
    push = await parse_model(request, Push)
    state = emulator_state(request)
    targets = list(state.channels) if push.sessions is None else push.sessions
    sent = 0
    for session_id in targets:
        session = state.ivh.find(session_id)
        if session is not None and session.send_frame(_frame_for(session, push.frame)):
            sent += 1
    return JSONResponse({"sent": sent})


@admin_endpoint
async def drop(request: Request) -> JSONResponse:
    """Cut a session's socket like a network failure (or close it with a given code)."""
    spec = await parse_model(request, Drop)
    state = emulator_state(request)
    outlet = state.channels.get(request.path_params["sid"])
    if outlet is None:
        raise AdminError(404, "the session has no open socket")
    if spec.code is None:
        outlet.abort()
    else:
        outlet.close(spec.code, spec.reason)
    return JSONResponse({"dropped": True})


@admin_endpoint
async def audio(request: Request) -> JSONResponse:
    """What the cloud saw of the session's last audio utterances: PCM size and SHA-256, Seqs,
    how each ended, and the pacing judge (audio.py)."""
    session = _session(emulator_state(request), request.path_params["sid"])
    assert session.speaker is not None
    return JSONResponse({"utterances": session.speaker.audio_log.report()})


def ivh_routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("/emulator/ivh/sessions", bulk_create, methods=["POST"]),
        Route("/emulator/ivh/sessions/{sid}/status", change_status, methods=["POST"]),
        Route("/emulator/ivh/sessions/{sid}/push", push_one, methods=["POST"]),
        Route("/emulator/ivh/sessions/{sid}/drop", drop, methods=["POST"]),
        Route("/emulator/ivh/push", push_many, methods=["POST"]),
        Route("/emulator/ivh/sessions/{sid}/audio", audio, methods=["GET"]),
    ]
