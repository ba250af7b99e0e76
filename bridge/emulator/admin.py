"""The admin API under ``/emulator/``: JSON in and out, no authentication (bind it to loopback).

General
    GET    /emulator/state                      sessions (IVH live and closed, Desk live and
                                                ended), open sockets, armed faults, journal size
    POST   /emulator/reset                      close and forget everything, clear journal/faults
    GET    /emulator/journal?path=&since=&kind=&session_id=&limit=
                                                ``{"entries":[...],"next_index":n}`` (journal.py)
    DELETE /emulator/journal                    clear it
    POST   /emulator/faults                     arm ``{"path","count","latency_ms"?,
                                                "http_status"?,"error_code"?,"error_message"?,
                                                "drop"?}`` (faults.py)
    GET    /emulator/faults | DELETE /emulator/faults
IVH (admin_ivh.py)
    POST   /emulator/ivh/sessions               bulk-create ``{"count","status","started",
                                                "user_id_prefix","project_id","driver_type",
                                                "protocol","stream_max_interval"}`` -> ids
    POST   /emulator/ivh/sessions/{sid}/status  ``{"status":1|2|3|4,"started"?,"error_code"?,
                                                "error_message"?}``; 2 closes the session
    POST   /emulator/ivh/sessions/{sid}/push    ``{"frame":{...}}`` to its socket (404 if none)
    POST   /emulator/ivh/push                   ``{"frame":{...},"sessions":[...]|null}`` -> count
    POST   /emulator/ivh/sessions/{sid}/drop    cut its socket (``{"code","reason"}``: close)
    GET    /emulator/ivh/sessions/{sid}/audio   ``{"utterances":[...]}``: PCM bytes and SHA-256,
                                                Seqs, ending, pacing ratio (audio.py)
Desk (admin_desk.py)
    POST   /emulator/desk/sessions              ``{"session_id"?,"state"?,"raw_state"?,"agent_id"?,
                                                "client_user_id"?,"customer_service_id"?}``
    GET    /emulator/desk/sessions/{sid}        the session
    POST   /emulator/desk/sessions/{sid}/state  ``{"state"?,"raw_state"?,"agent_id"?}``
    DELETE /emulator/desk/sessions/{sid}        end it (then 141005 upstream)
    GET    /emulator/desk/sessions/{sid}/messages  the recorded send_stream_msg messages
Desk handover and callbacks (admin_desk_events.py)
    POST   /emulator/desk/handover              ``{"outcome"?,"agent_id"?,"after_ms"?}``: what
                                                transfer_to_human leads to (desk_handover.py)
    POST   /emulator/desk/callback              ``{"url"?,"delay_ms"?,"delay_count"?,
                                                "duplicate"?,"drop"?}`` (desk_callbacks.py)
    GET    /emulator/desk/callback              counts and latest deliveries (never the URL)
    POST   /emulator/desk/sessions/{sid}/chat   ``{"role":"user"|"bot"|"agent","text"}``
    POST   /emulator/desk/sessions/{sid}/event  ``{"event","fields"?}``: any B.6 notification

Errors answer ``{"error": "<message>"}`` with 400 (bad body), 404 (no such thing) or 409.
"""

from __future__ import annotations

import functools
from collections.abc import Awaitable, Callable
from typing import TypeVar

from pydantic import BaseModel, ValidationError
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from bridge.emulator.faults import FaultSpec
from bridge.emulator.ivh_api import emulator_state
from bridge.emulator.wire import parse_json, read_body

Model = TypeVar("Model", bound=BaseModel)
Endpoint = Callable[[Request], Awaitable[JSONResponse]]


class AdminError(Exception):
    """An admin request that cannot be carried out; ``status`` is its HTTP status."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def admin_endpoint(func: Endpoint) -> Endpoint:
    """Answer AdminError as ``{"error": ...}`` with its status."""

    @functools.wraps(func)
    async def wrapper(request: Request) -> JSONResponse:
        try:
            return await func(request)
        except AdminError as exc:
            return JSONResponse({"error": exc.message}, status_code=exc.status)

    return wrapper


async def parse_model(request: Request, model: type[Model]) -> Model:
    """The request body validated as ``model`` (an empty body means ``{}``)."""
    raw = await read_body(request)
    if raw is None:
        raise AdminError(413, "request body too large")
    try:
        data = parse_json(raw) if raw.strip() else {}
        return model.model_validate(data)
    except ValidationError as exc:
        raise AdminError(400, _validation_message(exc)) from exc
    except ValueError as exc:
        raise AdminError(400, "request body is not valid JSON") from exc


def _validation_message(exc: ValidationError) -> str:
    problems = [f"{'.'.join(map(str, e['loc'])) or 'body'}: {e['msg']}" for e in exc.errors()]
    return "; ".join(problems)


def query_int(request: Request, name: str, default: int, *, high: int = 2**62) -> int:
    """A non-negative integer query parameter."""
    raw = request.query_params.get(name)
    if raw is None or raw == "":
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 18:
        raise AdminError(400, f"{name} must be a non-negative integer")
    return min(int(raw), high)


@admin_endpoint
async def get_state(request: Request) -> JSONResponse:
    """GET /emulator/state."""
    return JSONResponse(emulator_state(request).snapshot())


@admin_endpoint
async def reset(request: Request) -> JSONResponse:
    """POST /emulator/reset."""
    emulator_state(request).reset()
    return JSONResponse({"reset": True})


@admin_endpoint
async def get_journal(request: Request) -> JSONResponse:
    """GET /emulator/journal."""
    journal = emulator_state(request).journal
    query = request.query_params
    entries = journal.entries(
        path=query.get("path") or None,
        since=query_int(request, "since", 0),
        kind=query.get("kind") or None,
        session_id=query.get("session_id") or None,
        limit=query_int(request, "limit", 1000, high=100_000),
    )
    return JSONResponse({"entries": entries, "next_index": journal.next_index})


@admin_endpoint
async def get_stats(request: Request) -> JSONResponse:
    """GET /emulator/stats: call counts by path, socket counts by session."""
    return JSONResponse(emulator_state(request).journal.stats.view())


@admin_endpoint
async def clear_journal(request: Request) -> JSONResponse:
    """DELETE /emulator/journal."""
    emulator_state(request).journal.clear()
    return JSONResponse({"cleared": True})


@admin_endpoint
async def add_fault(request: Request) -> JSONResponse:
    """POST /emulator/faults."""
    spec = await parse_model(request, FaultSpec)
    fault = emulator_state(request).faults.add(spec)
    return JSONResponse({"fault": fault.to_dict()}, status_code=201)


@admin_endpoint
async def list_faults(request: Request) -> JSONResponse:
    """GET /emulator/faults."""
    return JSONResponse({"faults": emulator_state(request).faults.list()})


@admin_endpoint
async def clear_faults(request: Request) -> JSONResponse:
    """DELETE /emulator/faults."""
    faults = emulator_state(request).faults
    count = len(faults.list())
    faults.clear()
    return JSONResponse({"cleared": count})


def general_routes() -> list[Route]:
    """The routes of this module."""
    return [
        Route("/emulator/state", get_state, methods=["GET"]),
        Route("/emulator/reset", reset, methods=["POST"]),
        Route("/emulator/journal", get_journal, methods=["GET"]),
        Route("/emulator/journal", clear_journal, methods=["DELETE"]),
        Route("/emulator/stats", get_stats, methods=["GET"]),
        Route("/emulator/faults", add_fault, methods=["POST"]),
        Route("/emulator/faults", list_faults, methods=["GET"]),
        Route("/emulator/faults", clear_faults, methods=["DELETE"]),
    ]
