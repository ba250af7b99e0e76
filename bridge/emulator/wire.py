"""Response envelopes of both APIs (docs/protocol.md A.1, B.1) and bounded request-body reading."""

from __future__ import annotations

import json
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse

IVH_API_PREFIX = "/v2/ivh/sessionmanager/sessionmanagerservice/"
CHANNEL_PATH = "/v2/ws/ivh/interactdriver/interactdriverservice/commandchannel"
DESK_API_PREFIX = "/v4/desk_http_svc/"
MAX_BODY = 1024 * 1024


def ivh_envelope(
    code: int, message: str = "", payload: dict[str, Any] | None = None, request_id: str = ""
) -> dict[str, Any]:
    """A.1: ``{"Header":{"Code","Message","RequestID"},"Payload":{...}}``."""
    header = {"Code": code, "Message": message, "RequestID": request_id}
    return {"Header": header, "Payload": payload if payload is not None else {}}


def desk_envelope(code: int, message: str = "", **extra: Any) -> dict[str, Any]:
    """B.1: ``{"ActionStatus","ErrorInfo","ErrorCode",...}``."""
    status = "OK" if code == 0 else "FAIL"
    return {"ActionStatus": status, "ErrorInfo": message, "ErrorCode": code, **extra}


def error_envelope(path: str, code: int, message: str) -> dict[str, Any]:
    """The business-error envelope of whichever API serves ``path``."""
    if path.startswith(DESK_API_PREFIX):
        return desk_envelope(code, message)
    return ivh_envelope(code, message)


def respond(request: Request, body: dict[str, Any], *, status: int = 200) -> JSONResponse:
    """A JSON response; the business code is noted on the request for the journal."""
    header = body.get("Header")
    code = header.get("Code") if isinstance(header, dict) else body.get("ErrorCode")
    request.state.emulator_code = code
    return JSONResponse(body, status_code=status)


async def read_body(request: Request, limit: int = MAX_BODY) -> bytes | None:
    """The request body, or None once it grows past ``limit`` bytes."""
    chunks: list[bytes] = []
    size = 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            return None
        chunks.append(chunk)
    return b"".join(chunks)


def parse_json(raw: bytes | str) -> Any:
    """JSON from bytes or text; raises ValueError for anything that does not parse."""
    try:
        return json.loads(raw)
    except RecursionError as exc:  # absurdly nested input must not crash a handler
        raise ValueError("JSON nested too deeply") from exc


def dumps(value: Any) -> str:
    """Compact JSON text, UTF-8 kept as is, as Tencent's gateways send it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))
