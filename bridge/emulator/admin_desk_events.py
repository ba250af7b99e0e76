"""Admin endpoints for Desk handover, chat lines and callback delivery (listed in admin.py)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.emulator.admin import AdminError, admin_endpoint, parse_model
from bridge.emulator.admin_desk import _live
from bridge.emulator.desk_callbacks import COMMAND
from bridge.emulator.desk_handover import Handover
from bridge.emulator.ivh_api import emulator_state


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class HandoverSpec(_Body):
    """``POST /emulator/desk/handover``: what a transfer_to_human leads to."""

    outcome: Literal["agent", "waiting_for_agent", "queuing", "no_agent"] = "agent"
    agent_id: str = Field(default="agent001@emulator.invalid", min_length=1, max_length=128)
    after_ms: int = Field(default=0, ge=0, le=600_000)


class CallbackSpec(_Body):
    """``POST /emulator/desk/callback``: the URL and the faults of the next deliveries."""

    url: str | None = Field(default=None, pattern=r"^(https?://.+)?$", max_length=2048)
    delay_ms: int | None = Field(default=None, ge=0, le=600_000)
    delay_count: int | None = Field(default=None, ge=0)
    duplicate: int | None = Field(default=None, ge=0)
    drop: int | None = Field(default=None, ge=0)


class ChatSpec(_Body):
    """``POST /emulator/desk/sessions/{sid}/chat``: a message from the user, the bot or an agent."""

    role: Literal["user", "bot", "agent"]
    text: str = Field(min_length=1, max_length=12_000)


class EventSpec(_Body):
    """``POST /emulator/desk/sessions/{sid}/event``: any B.6 event, with extra body fields."""

    event: str = Field(min_length=1, max_length=128)
    fields: dict[str, Any] = Field(default_factory=dict)


@admin_endpoint
async def set_handover(request: Request) -> JSONResponse:
    """Set the outcome of the next transfers."""
    spec = await parse_model(request, HandoverSpec)
    emulator_state(request).handover = Handover(**spec.model_dump())
    return JSONResponse(spec.model_dump())


@admin_endpoint
async def set_callback(request: Request) -> JSONResponse:
    """Set the callback URL and delivery faults; answers the sender's view (never the URL)."""
    spec = await parse_model(request, CallbackSpec)
    sender = emulator_state(request).callbacks
    if spec.url is not None:
        sender.url = spec.url
    for name in ("delay_ms", "delay_count", "duplicate", "drop"):
        value = getattr(spec, name)
        if value is not None:
            setattr(sender.rules, name, value)
    return JSONResponse(sender.view())


@admin_endpoint
async def get_callback(request: Request) -> JSONResponse:
    """Counts and the latest deliveries."""
    return JSONResponse(emulator_state(request).callbacks.view())


@admin_endpoint
async def add_chat(request: Request) -> JSONResponse:
    """Add a message to a live session's history (and notify the callback URL)."""
    spec = await parse_model(request, ChatSpec)
    state = emulator_state(request)
    session = _live(state, request.path_params["sid"])
    account = {"user": session.client_user_id, "agent": session.agent_id or "agent"}
    name = account.get(spec.role, session.customer_service_id)
    line = state.desk.add_line(session, role=spec.role, text=spec.text, account=name)
    return JSONResponse(
        {"role": line.role, "text": line.text, "at_ms": line.at_ms}, status_code=201
    )


@admin_endpoint
async def send_event(request: Request) -> JSONResponse:
    """Send one notification with any Event name (e.g. a user timeout)."""
    spec = await parse_model(request, EventSpec)
    state = emulator_state(request)
    session = state.desk.find(request.path_params["sid"])
    if session is None:
        raise AdminError(404, "no such Desk session")
    if not state.callbacks.url:
        raise AdminError(409, "no callback URL is set")
    body = {
        "CallbackCommand": COMMAND,
        "SessionId": session.session_id,
        "Event": spec.event,
        "EventTime": int(state.wall() * 1000),
        "ChannelType": "SDK",
        "ClientUserId": session.client_user_id,
        "CustomerServiceId": session.customer_service_id,
        "AgentId": session.agent_id,
        **spec.fields,
    }
    return JSONResponse({"request_id": state.callbacks.send(body)}, status_code=202)


def desk_event_routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("/emulator/desk/handover", set_handover, methods=["POST"]),
        Route("/emulator/desk/callback", set_callback, methods=["POST"]),
        Route("/emulator/desk/callback", get_callback, methods=["GET"]),
        Route("/emulator/desk/sessions/{sid}/chat", add_chat, methods=["POST"]),
        Route("/emulator/desk/sessions/{sid}/event", send_event, methods=["POST"]),
    ]
