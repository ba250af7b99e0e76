"""Admin endpoints for Desk sessions and their recorded stream messages (listed in admin.py)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.emulator.admin import AdminError, admin_endpoint, parse_model
from bridge.emulator.desk_state import DeskSession
from bridge.emulator.ivh_api import emulator_state
from bridge.emulator.state import EmulatorState

CanonicalState = Literal["not_in_session", "chatbot", "waiting_for_agent", "queuing", "agent"]
_ID = r"^[A-Za-z0-9@._:-]{1,128}$"


class DeskCreate(BaseModel):
    """``POST /emulator/desk/sessions``."""

    model_config = ConfigDict(extra="forbid")

    session_id: str | None = Field(default=None, pattern=_ID)
    state: CanonicalState = "chatbot"
    raw_state: str | None = Field(default=None, max_length=128)
    agent_id: str | None = Field(default=None, max_length=128)
    client_user_id: str | None = Field(default=None, min_length=1, max_length=128)
    customer_service_id: str | None = Field(default=None, min_length=1, max_length=128)


class DeskStateChange(BaseModel):
    """``POST /emulator/desk/sessions/{sid}/state``: a canonical state or a literal string."""

    model_config = ConfigDict(extra="forbid")

    state: CanonicalState | None = None
    raw_state: str | None = Field(default=None, max_length=128)
    agent_id: str | None = Field(default=None, max_length=128)


def _live(state: EmulatorState, session_id: str) -> DeskSession:
    session = state.desk.live.get(session_id)
    if session is None:
        raise AdminError(404, f"no live Desk session {session_id}")
    return session


@admin_endpoint
async def create(request: Request) -> JSONResponse:
    """Create a Desk session (a generated UUID when no id is given)."""
    spec = await parse_model(request, DeskCreate)
    try:
        session = emulator_state(request).desk.create(**spec.model_dump())
    except ValueError as exc:
        raise AdminError(409, str(exc)) from exc
    return JSONResponse(session.view(), status_code=201)


@admin_endpoint
async def get_one(request: Request) -> JSONResponse:
    """A live or ended session."""
    session = emulator_state(request).desk.find(request.path_params["sid"])
    if session is None:
        raise AdminError(404, "no such Desk session")
    return JSONResponse(session.view())


@admin_endpoint
async def change_state(request: Request) -> JSONResponse:
    """Move a live session to another state."""
    change = await parse_model(request, DeskStateChange)
    state = emulator_state(request)
    session = _live(state, request.path_params["sid"])
    if change.state is None and change.raw_state is None and change.agent_id is None:
        raise AdminError(400, "give state, raw_state or agent_id")
    state.desk.set_state(session, **change.model_dump())
    return JSONResponse(session.view())


@admin_endpoint
async def end(request: Request) -> JSONResponse:
    """End a live session."""
    state = emulator_state(request)
    session = _live(state, request.path_params["sid"])
    state.desk.end(session)
    return JSONResponse(session.view())


@admin_endpoint
async def messages(request: Request) -> JSONResponse:
    """The stream messages recorded for a live or ended session, oldest first."""
    session = emulator_state(request).desk.find(request.path_params["sid"])
    if session is None:
        raise AdminError(404, "no such Desk session")
    views = [m.view() for m in session.messages]
    return JSONResponse({"session_id": session.session_id, "messages": views})


def desk_routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("/emulator/desk/sessions", create, methods=["POST"]),
        Route("/emulator/desk/sessions/{sid}", get_one, methods=["GET"]),
        Route("/emulator/desk/sessions/{sid}", end, methods=["DELETE"]),
        Route("/emulator/desk/sessions/{sid}/state", change_state, methods=["POST"]),
        Route("/emulator/desk/sessions/{sid}/messages", messages, methods=["GET"]),
    ]
