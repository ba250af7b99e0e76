"""Payload models of the IVH actions (docs/topics.md)."""

from __future__ import annotations

import base64
import binascii
from typing import Annotated, Any, Literal

from pydantic import BeforeValidator, Field, WithJsonSchema, field_validator, model_validator

from bridge.core.actions import Flag, Payload, SessionPayload
from bridge.features.ivh.frames import utf8_len


class CreateSession(Payload):
    """`ivh/create_session`: createsession's documented fields, snake_case (docs/protocol.md
    A.3)."""

    virtualman_project_id: str = Field(min_length=1, max_length=128)
    user_id: str = Field(min_length=1, max_length=128)
    protocol: Literal["rtmp", "trtc", "webrtc"] = "webrtc"
    driver_type: Literal[1, 3] = 1
    protocol_option: dict[str, Any] | None = None
    extra_info: dict[str, Any] | None = None
    stream_max_interval: int | None = Field(default=None, ge=2000, le=6000)

    @field_validator("protocol", mode="before")
    @classmethod
    def _lower(cls, value: Any) -> Any:
        return value.lower() if isinstance(value, str) else value

    @field_validator("driver_type", mode="before")
    @classmethod
    def _int(cls, value: Any) -> Any:
        return int(value) if isinstance(value, str) and value.strip().isdigit() else value

    def extra(self) -> dict[str, Any]:
        """The optional fields, in Tencent's PascalCase."""
        fields = {
            "ProtocolOption": self.protocol_option,
            "ExtraInfo": self.extra_info,
            "StreamMaxInterval": self.stream_max_interval,
        }
        return {k: v for k, v in fields.items() if v is not None}


class SessionRef(SessionPayload):
    """An action on one session: start, get, close, interrupt."""


class SendText(SessionPayload):
    """`ivh/send_text`: a `SEND_TEXT` drive (docs/protocol.md A.5)."""

    text: str
    interrupt: Flag = False
    chat_command: str | None = None
    chat_round_id: str | None = None

    @model_validator(mode="after")
    def _says_something(self) -> SendText:
        # An empty Text only means something with Interrupt (docs/protocol.md A.5); alone it is Type
        # 9.
        if not self.text and not self.interrupt:
            raise ValueError("text is empty (to stop speaking, use ivh/interrupt)")
        return self

    def data(self) -> dict[str, Any]:
        """The drive's `Data`."""
        data: dict[str, Any] = {"Text": self.text, "Interrupt": self.interrupt}
        if self.chat_command is not None:
            data["ChatCommand"] = self.chat_command
        if self.chat_round_id is not None:
            data["ChatRoundId"] = self.chat_round_id
        return data

    @property
    def size(self) -> int:
        """Text size in bytes."""
        return utf8_len(self.text)


class StreamText(SessionPayload):
    """`ivh/stream_text`: one chunk of a streamed utterance; `final` ends it."""

    text: str = ""
    final: Flag = False

    @property
    def size(self) -> int:
        """Text size in bytes."""
        return utf8_len(self.text)


class SendCommand(SessionPayload):
    """`ivh/send_command`: any drive instruction, passed through."""

    command: str = Field(pattern=r"^[A-Z][A-Z_]{1,40}$")
    data: dict[str, Any] = Field(default_factory=dict)
    req_id: str | None = Field(default=None, pattern=r"^[0-9a-fA-F]{32}$")


def _audio_bytes(value: Any) -> Any:
    """Bytes from the binary topic pass as they are; JSON carries base64 text."""
    if isinstance(value, str):
        try:
            return base64.b64decode(value, validate=True)
        except binascii.Error as exc:
            raise ValueError("audio must be base64 (standard alphabet, with padding)") from exc
    return value


AudioBytes = Annotated[
    bytes,
    BeforeValidator(_audio_bytes),
    WithJsonSchema(
        {
            "type": "string",
            "contentEncoding": "base64",
            "description": "Base64 of a WAV (16 kHz, 16-bit, mono PCM) or of raw PCM like it.",
        }
    ),
]


class SendAudio(SessionPayload):
    """`ivh/send_audio`: a WAV (a file utterance) or the next piece of a live one
    (docs/protocol.md A.5 SEND_AUDIO); an empty piece or `final` ends a live utterance."""

    audio: AudioBytes = b""
    final: Flag = False
    mode: Literal["live", "file"] | None = None
