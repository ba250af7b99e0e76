"""An AsyncAPI 3.0.0 document generated from the topic catalogue, the action registry and models.

Nothing here is written by hand per action: request payloads are the actions' pydantic models
(`model_json_schema()`), hoisted into `components.schemas` so every `$ref` resolves inside the
document; outbound payloads are the models below or the dataclasses the bridge serialises.
"""

from __future__ import annotations

import copy
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, TypeAdapter

from bridge import __version__
from bridge.config import Settings
from bridge.core.actions import ActionSpec
from bridge.core.catalog import SID, TopicDoc, catalog
from bridge.core.requests import PLAIN_TEXT_FIELD
from bridge.features.ivh.tracker import SessionState
from bridge.tencent.models import DeskState

REF = "#/components/schemas/{model}"
# The binary shorthand (docs/topics.md `ivh/<sid>/audio`): bytes, one message per content type.
AUDIO_MESSAGES = {
    "ivh_audio_wav": ("audio/wav", "A whole WAV (16 kHz, 16-bit, mono PCM): a file utterance."),
    "ivh_audio_pcm": (
        "audio/L16;rate=16000;channels=1",
        "Raw PCM, little-endian: the next piece of a live utterance; empty ends it.",
    ),
}


class _Doc(BaseModel):
    model_config = ConfigDict(extra="allow")


class BridgeState(_Doc):
    """`<base>/bridge/state`: online, or offline with a reason."""

    state: Literal["online", "offline"]
    reason: Literal["shutdown", "connection_lost"] | None = None


class ErrorBody(_Doc):
    """The `error` member of an error response."""

    code: str
    message: str
    retryable: bool
    upstream_code: int | None
    http_status: int | None


class Response(_Doc):
    """The response envelope (docs/topics.md): `data` when ok, `error` otherwise."""

    status: Literal["ok", "error"]
    transaction: Any = None
    session_id: str | None = None
    data: Any = None
    elapsed_ms: float | None = None
    error: ErrorBody | None = None


class Event(_Doc):
    """A typed event (docs/topics.md); `seq` grows by one per event per session."""

    type: str
    service: Literal["ivh", "desk"] | None = None
    session_id: str | None = None
    seq: int | None = None
    ts: str
    data: dict[str, Any]
    before: Any = None
    after: Any = None


class SessionList(_Doc):
    """`<base>/ivh/sessions`: every live session."""

    sessions: list[SessionState]
    updated_at: str


class ChannelState(_Doc):
    """`<base>/ivh/<sid>/channel`: the command channel's state."""

    state: Literal["connecting", "connected", "reconnecting", "closed"]
    attempt: int
    reason: str | None = None


class DeskSessionState(_Doc):
    """`<base>/desk/<sid>/state`."""

    session_id: str
    state: DeskState
    raw_state: str | None
    agent_id: str | None
    updated_at: str


OUTBOUND: dict[str, Any] = {
    "bridge_state": BridgeState,
    "ivh_sessions": SessionList,
    "ivh_state": SessionState,
    "ivh_channel": ChannelState,
    "desk_state": DeskSessionState,
}


class _Builder:
    """Accumulates components while channels and operations are added."""

    def __init__(self) -> None:
        self.schemas: dict[str, Any] = {}
        self.messages: dict[str, Any] = {}
        self.channels: dict[str, Any] = {}
        self.operations: dict[str, Any] = {}

    def schema(self, name: str, type_: Any) -> dict[str, str]:
        """Hoist `type_`'s JSON schema (and its `$defs`) into components; a `$ref` to it."""
        if name not in self.schemas:
            body = TypeAdapter(type_).json_schema(ref_template=REF)
            self.schemas.update(body.pop("$defs", {}))
            self.schemas[name] = body
        return {"$ref": REF.format(model=name)}

    def message(self, name: str, payload: dict[str, Any], summary: str) -> None:
        """A message in components."""
        self.messages.setdefault(name, {"name": name, "summary": summary, "payload": payload})

    def channel(self, doc: TopicDoc, *messages: str) -> None:
        """A channel with its messages, and the bridge's operation on it."""
        channel: dict[str, Any] = {
            "address": doc.address,
            "description": doc.summary + (" Retained." if doc.retained else ""),
            "messages": {m: {"$ref": f"#/components/messages/{m}"} for m in messages},
        }
        if SID in doc.address:
            about = "A session id: 1-128 letters, digits or ._:@- starting with a letter or digit."
            channel["parameters"] = {"session_id": {"description": about}}
        if "{instance_id}" in doc.address:
            channel["parameters"] = {"instance_id": {"description": "A cluster instance id."}}
        if "{object_id}" in doc.address:
            channel["parameters"] = {"object_id": {"description": "A discovery object id."}}
        self.channels[doc.key] = channel
        self.operations[doc.key] = {
            "action": "receive" if doc.inbound else "send",
            "channel": {"$ref": f"#/channels/{doc.key}"},
            "summary": doc.summary,
            "messages": [{"$ref": f"#/channels/{doc.key}/messages/{m}"} for m in messages],
        }


def asyncapi(settings: Settings, specs: list[ActionSpec]) -> dict[str, Any]:
    """The whole document for a bridge with `settings` serving `specs`."""
    b = _Builder()
    by_key = {spec.key: spec for spec in specs}
    for doc in catalog(settings, specs):
        _add(b, doc, by_key)
    for key, op in b.operations.items():
        if key.startswith("request_"):
            op["reply"] = {"channel": {"$ref": f"#/channels/response_{key[len('request_') :]}"}}
    mqtt = settings.mqtt
    server = {
        "host": f"{mqtt.host}:{mqtt.port}",
        "protocol": "mqtts" if mqtt.tls else "mqtt",
        "protocolVersion": "5" if mqtt.protocol == 5 else "3.1.1",
    }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "tencent2mqtt",
            "version": __version__,
            "description": "Tencent Cloud Digital Human and Contact Center sessions over MQTT.",
        },
        "defaultContentType": "application/json",
        "servers": {"broker": server},
        "channels": b.channels,
        "operations": b.operations,
        "components": {"schemas": b.schemas, "messages": b.messages},
    }


def _add(b: _Builder, doc: TopicDoc, specs: dict[str, ActionSpec]) -> None:
    spec = specs.get(doc.action or "")
    if doc.kind == "request" and spec is not None:
        b.message(doc.key, _request_schema(b, spec, shorthand=False), spec.summary)
        b.channel(doc, doc.key)
    elif doc.key == "ivh_audio":
        _add_audio(b, doc)
    elif doc.kind == "command" and spec is not None:
        b.message(doc.key, _request_schema(b, spec, shorthand=True), doc.summary)
        b.channel(doc, doc.key)
    elif doc.kind == "response":
        b.message("response", b.schema("Response", Response), "A response envelope.")
        b.channel(doc, "response")
    elif doc.kind == "event":
        b.message("event", b.schema("Event", Event), "A typed event.")
        b.channel(doc, "event")
    else:
        _add_other(b, doc)


def _add_audio(b: _Builder, doc: TopicDoc) -> None:
    """Bytes only: no JSON schema, a content type per kind of audio."""
    for name, (content_type, summary) in AUDIO_MESSAGES.items():
        payload = {"type": "string", "format": "binary", "description": summary}
        b.message(name, payload, summary)
        b.messages[name]["contentType"] = content_type
    b.channel(doc, *AUDIO_MESSAGES)


def _add_other(b: _Builder, doc: TopicDoc) -> None:
    model = OUTBOUND.get(doc.key)
    payload: dict[str, Any]
    if model is not None:
        payload = b.schema(model.__name__, model)
    elif doc.key == "ha_status":
        payload = {"type": "string", "enum": ["online", "offline"]}
    else:
        payload = {"type": "object", "description": doc.summary}
    b.message(doc.key, payload, doc.summary)
    b.channel(doc, doc.key)


def _request_schema(b: _Builder, spec: ActionSpec, *, shorthand: bool) -> dict[str, Any]:
    """The action's model plus the envelope keys; a shorthand takes its id from the topic."""
    name = spec.key.replace("/", "_") + ("_shorthand" if shorthand else "_request")
    base = copy.deepcopy(spec.model.model_json_schema(ref_template=REF))
    b.schemas.update(base.pop("$defs", {}))
    base.setdefault("properties", {})
    base["properties"]["transaction"] = {"description": "Any JSON value, echoed in the answer."}
    base["properties"]["expires_at"] = {
        "description": "Epoch seconds or ISO 8601; later, the request answers `expired`.",
        "type": ["number", "string"],
    }
    if shorthand and "session_id" in base["properties"]:
        base["required"] = [r for r in base.get("required", []) if r != "session_id"]
    b.schemas[name] = base
    ref = {"$ref": REF.format(model=name)}
    if shorthand and spec.key in PLAIN_TEXT_FIELD:
        return {"oneOf": [{"type": "string", "description": "Plain UTF-8 text."}, ref]}
    return ref
