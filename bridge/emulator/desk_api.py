"""The Desk REST API on the Chat gateway (docs/protocol.md B.1-B.4, B.7).

``POST /v4/desk_http_svc/<command>?sdkappid&identifier&usersig&random&contenttype=json``.
Every answer is HTTP 200 with ``{"ActionStatus","ErrorInfo","ErrorCode",...}``. URL and UserSig
checks, in order: 60012 no sdkappid, 60006 another sdkappid, 60010 identifier not the admin,
60002 random not a uint32 or contenttype not json, 60004 no usersig, then the UserSig itself
(70003 unparsable, 70014 / 70013 SDKAppID / identifier differ from the URL, 70009 bad signature,
70001 expired). Then 60009 for an unknown command. Commands:

- ``get_session_state``: 60003 bad JSON, 141004 neither SessionId nor ClientUserId +
  CustomerServiceId, 141005 unknown or ended session.
- ``send_stream_msg``: 93000 body over 12,000 bytes, 90001 bad JSON, 141004 bad fields or a
  MsgKey that is unknown, another session's, or already finished; 141005 unknown or ended
  session.
- ``end_session``: 60003 bad JSON, 141004 no SessionId or a session never transferred to a
  human (B.5: "end a session that was transferred to a human"), 141005 unknown or ended session.
- ``transfer_to_human`` and ``describe_chat_messages``: see desk_handover.py.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

from bridge.emulator import desk_handover, fields
from bridge.emulator.auth import AuthError, check_usersig
from bridge.emulator.desk_state import AGENT_STATES, DeskSession
from bridge.emulator.ivh_api import emulator_state
from bridge.emulator.state import EmulatorState
from bridge.emulator.wire import desk_envelope, parse_json, read_body, respond

logger = logging.getLogger(__name__)

Handler = Callable[[EmulatorState, bytes | None], dict[str, Any]]
BODY_LIMIT = 12_000  # B.4: 93000 "the message body should not exceed 12k" (the strict reading)
INVALID_PARAMETER = 141004
NO_SESSION = 141005
_UINT32_MAX = 4_294_967_295


class DeskError(Exception):
    """A Desk business error, answered in ``ErrorCode``."""

    def __init__(self, code: int, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


async def desk_endpoint(request: Request) -> JSONResponse:
    """Every Desk command: check URL and UserSig, then dispatch."""
    state = emulator_state(request)
    raw = await read_body(request)
    try:
        authenticate(state, request.query_params)
    except AuthError as exc:
        return respond(request, desk_envelope(exc.code, exc.message))
    handler = HANDLERS.get(request.path_params["command"])
    if handler is None:
        return respond(request, desk_envelope(60009, "unknown REST API command"))
    try:
        result = handler(state, raw)
    except DeskError as exc:
        return respond(request, desk_envelope(exc.code, exc.message))
    return respond(request, desk_envelope(0, "", **result))


def authenticate(state: EmulatorState, query: Mapping[str, str]) -> None:
    """B.1 URL parameters and B.2 UserSig; AuthError with the B.7 code."""
    config = state.config
    if not query.get("sdkappid"):
        raise AuthError(60012, "SDKAppID missing from the URL")
    if query["sdkappid"] != str(config.sdkappid):
        raise AuthError(60006, "SDKAppID invalid")
    if query.get("identifier") != config.identifier:
        raise AuthError(60010, "identifier must be the App administrator")
    if not _is_uint32(query.get("random", "")):
        raise AuthError(60002, "random must be a 32-bit unsigned integer")
    if query.get("contenttype") != "json":
        raise AuthError(60002, "contenttype must be json")
    if not query.get("usersig"):
        raise AuthError(60004, "usersig missing from the URL")
    check_usersig(
        query["usersig"],
        sdkappid=config.sdkappid,
        identifier=config.identifier,
        secret_key=config.secret_key,
        now=state.wall(),
    )


def _is_uint32(raw: str) -> bool:
    return raw.isascii() and raw.isdigit() and len(raw) <= 10 and int(raw) <= _UINT32_MAX


def _json_object(raw: bytes | None, code: int) -> dict[str, Any]:
    if raw is None:
        raise DeskError(93000, "request body too large")
    try:
        body = parse_json(raw)
    except ValueError as exc:
        raise DeskError(code, "JSON format parsing failed") from exc
    if not isinstance(body, dict):
        raise DeskError(code, "request body must be a JSON object")
    return body


def _checked(read: Callable[[], Any]) -> Any:
    try:
        return read()
    except fields.FieldError as exc:
        raise DeskError(INVALID_PARAMETER, exc.message) from exc


def _live(state: EmulatorState, session_id: str) -> DeskSession:
    session = state.desk.live.get(session_id)
    if session is None:
        raise DeskError(NO_SESSION, "session does not exist or has ended")
    return session


def get_session_state(state: EmulatorState, raw: bytes | None) -> dict[str, Any]:
    """B.3: by SessionId, or by ClientUserId + CustomerServiceId."""
    body = _json_object(raw, 60003)
    session = _session_for_state_query(state, body)
    current, spelling = state.desk.spelled(session)
    result: dict[str, Any] = {"SessionId": session.session_id, "CurrentState": current}
    if session.state in AGENT_STATES:
        result["AgentId"] = session.agent_id
    elif spelling == "en":
        result["AgentId"] = ""  # the EN doc: "empty in other statuses"; the zh one omits it
    return result


def _session_for_state_query(state: EmulatorState, body: dict[str, Any]) -> DeskSession:
    if body.get("SessionId") is not None:
        return _live(state, _checked(lambda: fields.text(body, "SessionId", required=True)))
    user = _checked(lambda: fields.text(body, "ClientUserId"))
    service = _checked(lambda: fields.text(body, "CustomerServiceId"))
    if not user or not service:
        raise DeskError(INVALID_PARAMETER, "SessionId or ClientUserId + CustomerServiceId needed")
    session = state.desk.by_user(user, service)
    if session is None:
        raise DeskError(NO_SESSION, "session does not exist or has ended")
    return session


def send_stream_msg(state: EmulatorState, raw: bytes | None) -> dict[str, Any]:
    """B.4: the first call gets a new MsgKey; later calls must send it; Finish 1 ends it."""
    if raw is None or len(raw) > BODY_LIMIT:
        raise DeskError(93000, "the JSON body exceeds 12 KB")
    body = _json_object(raw, 90001)
    session_id = _checked(lambda: fields.text(body, "SessionId", required=True))
    chunk = _checked(lambda: fields.text(body, "Chunk"))
    if not isinstance(body.get("Chunk"), str):
        raise DeskError(INVALID_PARAMETER, "Chunk is required")
    msg_key = _checked(lambda: fields.text(body, "MsgKey"))
    finish = _checked(lambda: fields.integer(body, "Finish", default=0, low=0, high=1))
    custom = _checked(lambda: fields.text(body, "CloudCustomData"))
    session = _live(state, session_id)
    message = state.desk.message(msg_key) if msg_key else state.desk.new_message(session)
    if message is None or message.session_id != session_id or message.finished:
        raise DeskError(INVALID_PARAMETER, "MsgKey is unknown or its message has finished")
    message.add(chunk, finish=finish == 1, custom=custom)
    return {} if msg_key else {"MsgKey": message.msg_key}


def end_session(state: EmulatorState, raw: bytes | None) -> dict[str, Any]:
    """B.5 ``end_session``: later calls on the session answer 141005."""
    body = _json_object(raw, 60003)
    session_id = _checked(lambda: fields.text(body, "SessionId", required=True))
    session = _live(state, session_id)
    if not session.transferred:
        raise DeskError(INVALID_PARAMETER, "the session was not transferred to a human")
    state.desk.end(session)
    logger.info("Desk session %s ended by the API", session_id)
    return {}


def transfer_to_human(state: EmulatorState, raw: bytes | None) -> dict[str, Any]:
    """B.5: queue the session for a human agent; AgentId once one is assigned."""
    ask = _checked(lambda: desk_handover.parse_transfer(_json_object(raw, 60003)))
    session = _live(state, ask.session_id)
    if session.transferred or session.state in desk_handover.TRANSFERRED:
        raise DeskError(INVALID_PARAMETER, "the session is already transferred to a human")
    return {"AgentId": desk_handover.transfer(state, session, ask)}


def describe_chat_messages(state: EmulatorState, raw: bytes | None) -> dict[str, Any]:
    """B.5: the session's messages, paged, in the asked order (ended sessions too)."""
    body = _json_object(raw, 60003)
    session_id = _checked(lambda: fields.text(body, "SessionId", required=True))
    session = state.desk.find(session_id)
    if session is None:
        raise DeskError(NO_SESSION, "session does not exist")
    page: dict[str, Any] = _checked(
        lambda: desk_handover.describe(session, body, state.config.identifier)
    )
    return page


HANDLERS: dict[str, Handler] = {
    "transfer_to_human": transfer_to_human,
    "describe_chat_messages": describe_chat_messages,
    "get_session_state": get_session_state,
    "send_stream_msg": send_stream_msg,
    "end_session": end_session,
}
