"""Command-channel frames (docs/protocol.md A.5, A.6): upstream builders, downstream parsing. No
I/O."""

from __future__ import annotations

import functools
import re
import uuid
from dataclasses import dataclass
from typing import Any

from bridge.core import jsontext

# Documented byte limits (docs/protocol.md A.5): SEND_TEXT Text <= 4000 bytes; SEND_STREAMTEXT Text
# <= 2000 bytes per the current zh doc, <= 1000 per the older EN doc [D]. A chunk may have 2000
# bytes, and goes out in frames of at most 1000, which both readings accept.
SEND_TEXT_MAX_BYTES = 4000
STREAM_TEXT_MAX_BYTES = 2000
STREAM_TEXT_FRAME_BYTES = 1000
TERMINAL_SPEAK = frozenset({"TextOver", "AudioOver", "Error"})

_EVENT_BY_TYPE = {3: "speak_status", 4: "llm_content", 5: "llm_thinking", 9: "drive_failed"}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])|(?<=[A-Z])(?=[A-Z][a-z])")


def new_req_id() -> str:
    """A fresh 32-hex ReqId (docs/protocol.md A.1: a new one for every send)."""
    return uuid.uuid4().hex


def drive(session_id: str, command: str, data: dict[str, Any], req_id: str) -> str:
    """An upstream frame `{"Header":{},"Payload":{ReqId,SessionId,Command,Data}}`."""
    payload = {"ReqId": req_id, "SessionId": session_id, "Command": command, "Data": data}
    return jsontext.dumps({"Header": {}, "Payload": payload})


def speech_role(command: str, data: dict[str, Any]) -> tuple[bool, bool]:
    """(starts speech, is an interrupt) for a drive: an interrupt must wait for TextStart (A.5)."""
    text = data.get("Text")
    if command not in ("SEND_TEXT", "SEND_STREAMTEXT"):
        return False, False
    if not text:
        return False, data.get("Interrupt") is True
    return command == "SEND_TEXT" or data.get("Seq") == 1, False


def heartbeat(session_id: str) -> str:
    """`SEND_HEARTBEAT` with Text "PING" (docs/protocol.md A.5)."""
    return drive(session_id, "SEND_HEARTBEAT", {"Text": "PING"}, new_req_id())


@functools.lru_cache(maxsize=1024)  # a handful of field names, seen on every frame
def snake(name: str) -> str:
    """`SpeakStatus` -> `speak_status`, `ReqId` -> `req_id`, `TTSSupport` -> `tts_support`."""
    return _CAMEL.sub("_", name).lower()


@dataclass(frozen=True, slots=True)
class Downstream:
    """One downstream frame, classified for MQTT."""

    event_type: str
    data: dict[str, Any]
    replay_key: tuple[Any, ...] | None


def parse_downstream(raw: str | bytes) -> Downstream:
    """Classify a frame; a `Payload` dict is used when present, else the top level (A.6)."""
    try:
        frame = jsontext.loads(raw, max_depth=jsontext.MAX_DEPTH)
    except ValueError as exc:
        text = raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw
        error = "nested too deeply" if isinstance(exc, jsontext.TooDeep) else "not JSON"
        return Downstream("downstream", {"raw": text, "error": error}, None)
    if not isinstance(frame, dict):
        return Downstream("downstream", {"raw": frame}, None)
    inner = frame.get("Payload")
    body: dict[str, Any] = inner if isinstance(inner, dict) else frame
    data = {snake(k): v for k, v in body.items() if isinstance(k, str)}
    data["raw"] = frame
    return Downstream(_event_type(body, _header_code(frame)), data, _replay_key(body))


def _header_code(frame: dict[str, Any]) -> Any:
    """The envelope's `Header.Code` (A.1: where IVH puts errors), if the frame has one."""
    header = frame.get("Header")
    return header.get("Code") if isinstance(header, dict) else None


_NO_ERROR = (None, 0, "0")


def _event_type(body: dict[str, Any], header_code: Any) -> str:
    kind = body.get("Type")
    failed = (
        body.get("SpeakStatus") == "Error"
        or body.get("ErrorCode") not in _NO_ERROR
        or header_code not in _NO_ERROR
    )
    if kind == 9 or (failed and kind in (3, None)):
        return "drive_failed"
    return _EVENT_BY_TYPE.get(kind, "downstream") if isinstance(kind, int) else "downstream"


_SCALARS = (str, int, float, type(None))


def _replay_key(body: dict[str, Any]) -> tuple[Any, ...] | None:
    """Speak-status frames are re-sent after a reconnect (A.4): they de-duplicate on this key."""
    if body.get("Type") != 3:
        return None
    return replay_key(
        [body.get("ReqId"), body.get("SpeakStatus"), body.get("Seq"), body.get("FinalType")]
    )


def replay_key(parts: Any) -> tuple[Any, ...] | None:
    """(`ReqId`, `SpeakStatus`, `Seq`, `FinalType`) as a key, or None. A list or an object where
    the protocol has a string or a number cannot be a key: such a frame is published as it is,
    without de-duplication (and a key handed over that way is ignored)."""
    if not isinstance(parts, list) or len(parts) != 4:
        return None
    return tuple(parts) if all(isinstance(part, _SCALARS) for part in parts) else None


def pieces(text: str, limit: int) -> list[str]:
    """`text` cut into pieces of at most `limit` UTF-8 bytes, between characters."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return [text]
    out: list[str] = []
    start = 0
    while start < len(data):
        end = min(start + limit, len(data))
        while end < len(data) and (data[end] & 0xC0) == 0x80:  # not inside a character
            end -= 1
        out.append(data[start:end].decode("utf-8"))
        start = end
    return out


def utf8_len(text: str) -> int:
    """Size of `text` in UTF-8 bytes, the unit of Tencent's limits."""
    return len(text.encode("utf-8"))
