"""Parsing one request: its context (transaction, reply topic), payload, expiry and model."""

from __future__ import annotations

import functools
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from bridge.config import BridgeConfig
from bridge.core import jsontext
from bridge.core.actions import Payload
from bridge.core.inbound import Inbound
from bridge.core.topics import Route, Topics
from bridge.errors import RequestError, validation_problems
from bridge.ids import valid_session_id

# Shorthand topics that take plain text: the field the text becomes (docs/topics.md).
PLAIN_TEXT_FIELD = {"ivh/send_text": "text", "ivh/stream_text": "text", "desk/send_stream": "chunk"}
# Shorthand topics that take bytes only (PCM may begin with any byte): the field they fill.
BINARY_FIELD = {"ivh/send_audio": "audio"}
# Request keys the bridge consumes itself; they never reach a payload model.
ENVELOPE_KEYS = ("transaction", "expires_at")


@dataclass(slots=True)
class RequestContext:
    """Everything needed to answer one request."""

    action: str
    topic: str
    reply_topic: str
    correlation_data: bytes | None
    started: float
    transaction: Any = None
    session_id: str | None = None
    asked: bool = False
    fingerprint: bytes = field(default=b"")

    @classmethod
    def start(cls, route: Route, msg: Inbound, topics: Topics) -> RequestContext:
        """A context for `route`, answering on the Response Topic when the request gave one."""
        custom = _valid_response_topic(msg.response_topic)
        if custom is not None and topics.parse(custom) is not None:
            custom = None  # an answer on a command topic would come back as a request
        return cls(
            action=route.action,
            topic=msg.topic,
            reply_topic=custom or topics.response(route.action),
            correlation_data=msg.correlation_data if custom else None,
            started=time.monotonic(),
            session_id=route.session_id,
            asked=custom is not None,
            fingerprint=msg.payload,
        )

    def bind(self, data: dict[str, Any]) -> None:
        """Take the transaction and session id from a decoded payload."""
        if "transaction" in data:
            self.transaction = data["transaction"]
            self.asked = True
        sid = data.get("session_id")
        if self.session_id is None and valid_session_id(sid):
            self.session_id = sid


def payload_limit(action: str, config: BridgeConfig) -> int:
    """The largest payload `action` takes: audio has its own limit (a WAV of minutes)."""
    return config.max_audio_payload if action in BINARY_FIELD else config.max_payload


def _valid_response_topic(topic: str | None) -> str | None:
    if not topic or "+" in topic or "#" in topic or "\0" in topic:
        return None
    return topic


def decode_payload(route: Route, raw: bytes) -> dict[str, Any]:
    """Bytes -> a JSON object; shorthand text topics also take plain text, binary ones bytes."""
    binary = BINARY_FIELD.get(route.action) if route.shorthand else None
    if binary:
        return {binary: raw, "session_id": route.session_id}
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise RequestError("payload is not valid UTF-8", code="invalid_json") from exc
    plain = PLAIN_TEXT_FIELD.get(route.action) if route.shorthand else None
    if plain:
        data = _object_or_none(text)
        if data is None:  # anything but a JSON object is what to say: `{hello}` too
            return {plain: text, "session_id": route.session_id}
    else:
        data = _parse_json(text)
    return _with_topic_session(route, data)


def _object_or_none(text: str) -> dict[str, Any] | None:
    """The JSON object `text` is, or None. An object with numbers JSON has not (`NaN`) or
    nested too deep is refused: it was meant as an object, and speaking it would surprise."""
    if not text.lstrip().startswith("{"):  # no JSON object can start otherwise: no parse
        return None
    try:
        value = jsontext.loads(text, max_depth=jsontext.MAX_DEPTH)
    except (jsontext.NotFinite, jsontext.TooDeep):
        return _parse_json(text)  # raises the request error
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _parse_json(text: str) -> dict[str, Any]:
    if not text.strip():
        return {}
    try:
        value = jsontext.loads(text, max_depth=jsontext.MAX_DEPTH)
    except jsontext.NotFinite as exc:  # JSON in form, but nothing the bridge could echo back
        raise RequestError(f"invalid payload: {exc}", code="invalid_payload") from exc
    except ValueError as exc:
        raise RequestError(f"payload is not valid JSON: {exc}", code="invalid_json") from exc
    if not isinstance(value, dict):
        raise RequestError("payload must be a JSON object", code="invalid_payload")
    return value


def _with_topic_session(route: Route, data: dict[str, Any]) -> dict[str, Any]:
    sid = data.get("session_id")
    if route.session_id is not None:
        if sid is not None and sid != route.session_id:
            raise RequestError("session_id in the payload differs from the topic's")
        data["session_id"] = route.session_id
    elif sid is not None and not valid_session_id(sid):
        raise RequestError(
            "session_id must match ^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$",
            code="invalid_session_id",
        )
    return data


def expired(msg: Inbound, data: dict[str, Any]) -> bool:
    """Whether the MQTT 5 Message Expiry ran out in the bridge, or `expires_at` has passed."""
    if msg.expiry is not None and time.monotonic() - msg.received_at > msg.expiry:
        return True
    deadline = data.get("expires_at")
    return deadline is not None and _epoch(deadline) < time.time()


def _epoch(value: Any) -> float:
    if isinstance(value, bool):
        raise RequestError("expires_at must be epoch seconds or an ISO 8601 time")
    try:
        if isinstance(value, int | float):
            return float(value)
        if isinstance(value, str):
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except (ValueError, OverflowError):  # not a time; or past what a float or a date holds
        pass
    raise RequestError("expires_at must be epoch seconds or an ISO 8601 time")


def validate(model: type[Payload], data: dict[str, Any], route: Route) -> Payload:
    """Validate the payload against the action's model; the error names each bad field."""
    fields = {k: v for k, v in data.items() if k not in ENVELOPE_KEYS}
    unwanted = route.shorthand or fields.get("session_id") is None
    if unwanted and not _takes_session_id(model):
        fields.pop("session_id", None)
    try:
        return model.model_validate(fields)
    except ValidationError as exc:
        raise RequestError(_describe(exc)) from None


@functools.cache
def _takes_session_id(model: type[Payload]) -> bool:
    """Whether the model has a `session_id` field (pydantic's `model_fields` is a descriptor
    that checks for deprecated use on every read)."""
    return "session_id" in model.model_fields


def _describe(exc: ValidationError) -> str:
    return "invalid payload: " + "; ".join(validation_problems(exc, whole="payload")[:5])
