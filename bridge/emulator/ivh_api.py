"""The IVH session-manager HTTP API (docs/protocol.md A.1-A.3), signed as A.2 says.

``POST /v2/ivh/sessionmanager/sessionmanagerservice/<api>`` with ``{"Header":{},"Payload":{}}``.
A bad, stale or missing signature answers HTTP 401 with ``Header.Code`` 100005; business errors
answer HTTP 200 with a non-zero ``Header.Code`` (100001 bad parameters, 100008 too many
sessions, 110013/110014/110018/110022 per A.7). ``listsessionofuin`` returns ``DriverType`` as an
int, ``listsessionofprojectid`` as a string: A.3 says the docs disagree, so clients see both.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge.emulator import fields
from bridge.emulator.auth import AuthError, check_ivh_query
from bridge.emulator.ivh_state import BAD_PARAMS, NOT_FOUND, IvhError
from bridge.emulator.state import EmulatorState
from bridge.emulator.wire import ivh_envelope, parse_json, read_body, respond

logger = logging.getLogger(__name__)

Handler = Callable[[EmulatorState, dict[str, Any]], dict[str, Any]]
PROTOCOLS = ("rtmp", "trtc", "webrtc")


def emulator_state(request: Request) -> EmulatorState:
    """The state object the app was built with."""
    state = request.app.state.emulator
    assert isinstance(state, EmulatorState)
    return state


async def ivh_endpoint(request: Request) -> JSONResponse:
    """Every session-manager API: authenticate, parse the envelope, dispatch."""
    state = emulator_state(request)
    raw = await read_body(request)
    try:
        check_ivh_query(
            request.query_params,
            appkey=state.config.appkey,
            access_token=state.config.access_token,
            now=state.wall(),
            window=state.config.timestamp_window,
        )
    except AuthError as exc:
        return respond(request, ivh_envelope(exc.code, exc.message), status=401)
    handler = HANDLERS.get(request.path_params["api"])
    if handler is None:
        return respond(request, ivh_envelope(BAD_PARAMS, "unknown API"), status=404)
    return _dispatch(request, state, handler, raw)


def _dispatch(
    request: Request, state: EmulatorState, handler: Handler, raw: bytes | None
) -> JSONResponse:
    request_id = uuid.uuid4().hex
    try:
        header, payload = _envelope(raw)
        request_id = header.get("RequestID") or request_id
        result = handler(state, payload)
    except fields.FieldError as exc:
        return respond(request, ivh_envelope(BAD_PARAMS, exc.message, request_id=request_id))
    except IvhError as exc:
        return respond(request, ivh_envelope(exc.code, exc.message, request_id=request_id))
    return respond(request, ivh_envelope(0, "", result, request_id=request_id))


def _envelope(raw: bytes | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """A.1: ``{"Header":{...},"Payload":{...}}``; a missing Header is tolerated."""
    if raw is None:
        raise IvhError(BAD_PARAMS, "request body too large")
    try:
        body = parse_json(raw)
    except ValueError as exc:
        raise IvhError(BAD_PARAMS, "request body is not valid JSON") from exc
    if not isinstance(body, dict):
        raise IvhError(BAD_PARAMS, "request body must be a JSON object")
    header = fields.mapping(body, "Header")
    if not isinstance(body.get("Payload"), dict):
        raise IvhError(BAD_PARAMS, "Payload must be an object")
    if not isinstance(header.get("RequestID", ""), str):
        raise IvhError(BAD_PARAMS, "Header.RequestID must be a string")
    return header, body["Payload"]


def _req_id(payload: dict[str, Any]) -> str:
    return fields.text(payload, "ReqId", required=True, max_bytes=128)


def _session_id(payload: dict[str, Any]) -> str:
    return fields.text(payload, "SessionId", required=True, max_bytes=256)


def _creation_fields(payload: dict[str, Any]) -> dict[str, Any]:
    """The createsession fields shared by both create APIs (A.3)."""
    if payload.get("SessionId"):
        raise IvhError(BAD_PARAMS, "SessionId is assigned by the server")
    protocol = fields.text(payload, "Protocol", required=True)
    if protocol not in PROTOCOLS:
        raise IvhError(BAD_PARAMS, "Protocol must be rtmp, trtc or webrtc")
    driver_type = fields.integer(payload, "DriverType", default=1, numeric_string=True)
    if driver_type not in (1, 3):
        raise IvhError(BAD_PARAMS, "DriverType must be 1 or 3")
    interval = fields.integer(payload, "StreamMaxInterval", default=2000, low=2000, high=6000)
    fields.mapping(payload, "ProtocolOption")
    fields.mapping(payload, "ExtraInfo")
    return {
        "user_id": fields.text(payload, "UserId", required=True, max_bytes=128),
        "protocol": protocol,
        "driver_type": driver_type,
        "stream_max_interval": interval / 1000,
    }


def _created(req_id: str, state: EmulatorState, **values: Any) -> dict[str, Any]:
    session = state.ivh.create(**values)
    logger.info("IVH session %s created for user %s", session.session_id, session.user_id)
    return {
        "ReqId": req_id,
        "SessionId": session.session_id,
        "SessionStatus": int(session.status),
        "PlayStreamAddr": session.play_stream_addr,
    }


def create_session(state: EmulatorState, payload: dict[str, Any]) -> dict[str, Any]:
    """``createsession``: a new session from a platform project."""
    req_id = _req_id(payload)
    project_id = fields.text(payload, "VirtualmanProjectId", required=True, max_bytes=128)
    return _created(req_id, state, project_id=project_id, **_creation_fields(payload))


def create_session_by_asset(state: EmulatorState, payload: dict[str, Any]) -> dict[str, Any]:
    """``createsessionbyasset``: a new session from an asset avatar."""
    req_id = _req_id(payload)
    asset_key = fields.text(payload, "AssetVirtualmanKey", required=True, max_bytes=128)
    return _created(req_id, state, asset_key=asset_key, **_creation_fields(payload))


def stat_session(state: EmulatorState, payload: dict[str, Any]) -> dict[str, Any]:
    """``statsession``: answers for closed sessions too, with the reason in ErrorCode."""
    req_id, session_id = _req_id(payload), _session_id(payload)
    session = state.ivh.find(session_id)
    if session is None:
        raise IvhError(NOT_FOUND, "session does not exist")
    return {
        "ReqId": req_id,
        "SessionStatus": int(session.status),
        "PlayStreamAddr": session.play_stream_addr,
        "SpeakStatus": session.speak_status,
        "IsSessionStarted": session.started,
        "ErrorCode": session.error_code,
        "ErrorMessage": session.error_message,
    }


def start_session(state: EmulatorState, payload: dict[str, Any]) -> dict[str, Any]:
    """``startsession``: arm the session for driving."""
    req_id, session_id = _req_id(payload), _session_id(payload)
    state.ivh.start(session_id)
    return {"ReqId": req_id}


def close_session(state: EmulatorState, payload: dict[str, Any]) -> dict[str, Any]:
    """``closesession``: stop the stream and release the concurrency."""
    req_id, session_id = _req_id(payload), _session_id(payload)
    state.ivh.close(state.ivh.open_session(session_id))
    return {"ReqId": req_id}


def list_sessions_of_uin(state: EmulatorState, payload: dict[str, Any]) -> dict[str, Any]:
    """``listsessionofuin``: every live session of the account, DriverType as an int."""
    req_id = _req_id(payload)
    sessions = [s.list_item() for s in state.ivh.live_sessions()]
    return {"ReqId": req_id, "Sessions": sessions}


def list_sessions_of_project(state: EmulatorState, payload: dict[str, Any]) -> dict[str, Any]:
    """``listsessionofprojectid``: the live sessions of one project, DriverType as a string."""
    req_id = _req_id(payload)
    project_id = fields.text(payload, "VirtualmanProjectId", required=True, max_bytes=128)
    live = state.ivh.live_sessions()
    sessions = [s.list_item(driver_type_as=str) for s in live if s.project_id == project_id]
    return {"ReqId": req_id, "Sessions": sessions}


HANDLERS: dict[str, Handler] = {
    "createsession": create_session,
    "createsessionbyasset": create_session_by_asset,
    "statsession": stat_session,
    "startsession": start_session,
    "closesession": close_session,
    "listsessionofuin": list_sessions_of_uin,
    "listsessionofprojectid": list_sessions_of_project,
}
