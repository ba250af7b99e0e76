"""Upstream drive instructions on the command channel (docs/protocol.md A.5).

A frame is ``{"Header":{},"Payload":{"ReqId","SessionId","Command","Data"}}``; a frame without
``Header`` is accepted, and so is one with the payload fields at top level (A.5 notes a public
sample without Header). Anything wrong (bad JSON, wrong types, another session's id, an unknown
command, Text over 4000 bytes, a streamed chunk over 1000 bytes, a first Seq other than 1 or
one that does not increase, SEND_AUDIO on a DriverType 1 session) answers a Type 9 "drive
failed" frame with ``ErrorCode`` 100001 and ``ErrorMsg``. ``SEND_HEARTBEAT`` answers nothing:
A.6 documents no reply. A streaming interrupt without a non-zero ``Seq`` is ignored, as A.5
says the cloud does, and so is any interrupt before the utterance has begun speaking (A.5: send
it only after TextStart).
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from typing import Any

from bridge.emulator import fields
from bridge.emulator.ivh_state import BAD_PARAMS, IvhSession
from bridge.emulator.speech import AUDIO_PLAYS, TEXT_SPEAKS, Speaker
from bridge.emulator.wire import parse_json

Command = Callable[[IvhSession, Speaker, str, dict[str, Any]], None]
MAX_TEXT = 4000  # A.5 SEND_TEXT
MAX_STREAM_TEXT = 1000  # A.5 SEND_STREAMTEXT: 2000 (zh doc) or 1000 (EN doc); the strict reading
MAX_AUDIO_B64 = 256 * 1024
MAX_PACKET = 5120  # A.5: 160 ms packets; the strict reading: never more in one
WRONG_TIME = 110015  # A.7: an instruction sent at the wrong time (the A.5 ordering rules)


class DriveError(Exception):
    """A drive the cloud would refuse with a Type 9 frame."""

    def __init__(self, message: str, *, req_id: str = "", seq: int = 0, code: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.req_id = req_id
        self.seq = seq
        self.code = code or (WRONG_TIME if message in (AUDIO_PLAYS, TEXT_SPEAKS) else BAD_PARAMS)


def failed_payload(error: DriveError) -> dict[str, Any]:
    """A.6 Type 9: the drive failed."""
    return {
        "Type": 9,
        "ReqId": error.req_id,
        "Seq": error.seq,
        "ErrorCode": error.code,
        "ErrorMsg": error.message,
    }


def handle_frame(session: IvhSession, text: str) -> bool:
    """Carry out one upstream text frame; True when it was a valid instruction."""
    assert session.speaker is not None
    try:
        req_id, command, data = parse_frame(text, session.session_id)
        try:
            COMMANDS[command](session, session.speaker, req_id, data)
        except fields.FieldError as exc:
            raise DriveError(exc.message, req_id=req_id, seq=_seq_of(data)) from exc
        except DriveError as exc:
            exc.req_id, exc.seq = req_id, exc.seq or _seq_of(data)
            raise
    except DriveError as exc:
        session.emit(failed_payload(exc))
        return False
    return True


def _seq_of(data: dict[str, Any]) -> int:
    seq = data.get("Seq")
    return seq if isinstance(seq, int) and not isinstance(seq, bool) else 0


def parse_frame(text: str, session_id: str) -> tuple[str, str, dict[str, Any]]:
    """(ReqId, Command, Data) of an upstream frame, or DriveError."""
    try:
        frame = parse_json(text)
    except ValueError as exc:
        raise DriveError("frame is not valid JSON") from exc
    if not isinstance(frame, dict):
        raise DriveError("frame must be a JSON object")
    if not isinstance(frame.get("Header", {}), dict):
        raise DriveError("Header must be an object")
    payload = frame.get("Payload", frame)
    if not isinstance(payload, dict):
        raise DriveError("Payload must be an object")
    return _payload_fields(payload, session_id)


def _payload_fields(payload: dict[str, Any], session_id: str) -> tuple[str, str, dict[str, Any]]:
    try:
        req_id = fields.text(payload, "ReqId", required=True, max_bytes=128)
    except fields.FieldError as exc:
        raise DriveError(exc.message) from exc
    if payload.get("SessionId") != session_id:
        raise DriveError("SessionId must be this channel's session", req_id=req_id)
    command = payload.get("Command")
    if not isinstance(command, str) or command not in COMMANDS:
        raise DriveError(f"unknown Command {str(command)[:64]!r}", req_id=req_id)
    data = payload.get("Data")
    if not isinstance(data, dict):
        raise DriveError("Data must be an object", req_id=req_id)
    return req_id, command, data


def _send_text(session: IvhSession, speaker: Speaker, req_id: str, data: dict[str, Any]) -> None:
    """SEND_TEXT: non-empty Text always interrupts and speaks; empty Text + Interrupt stops."""
    fields.check_types(data, {"ChatRoundId": str, "VideoSeiInfo": str, "SmartActionEnabled": bool})
    fields.text(data, "CloudAiVisitorBizId", max_bytes=64)
    text = fields.text(data, "Text", max_bytes=MAX_TEXT)
    interrupt = fields.flag(data, "Interrupt")
    chat = fields.text(data, "ChatCommand") != "NotUseChat"
    if text:
        error = speaker.say(req_id, text, chat=chat)
        if error:
            raise DriveError(error)
    elif interrupt:
        speaker.interrupt_drive()
    else:
        raise DriveError("Text is empty and Interrupt is not set")


def _send_stream(session: IvhSession, speaker: Speaker, req_id: str, data: dict[str, Any]) -> None:
    """SEND_STREAMTEXT: one ReqId per utterance, Seq from 1, IsFinal at the end."""
    fields.check_types(data, {"IsInsertSentence": bool, "SmartActionEnabled": bool})
    text = fields.text(data, "Text", max_bytes=MAX_STREAM_TEXT)
    if fields.flag(data, "Interrupt") and not text:
        if _seq_of(data):
            speaker.interrupt_drive()
        return  # A.5: without a non-zero Seq the interrupt is ignored
    seq = fields.integer(data, "Seq", low=1)
    final, clause = fields.flag(data, "IsFinal"), fields.flag(data, "IsSentence")
    error = speaker.stream(req_id, seq=seq, text=text, final=final, clause=clause)
    if error:
        raise DriveError(error)


def _send_audio(session: IvhSession, speaker: Speaker, req_id: str, data: dict[str, Any]) -> None:
    """SEND_AUDIO (DriverType 3 only): Base64 PCM packets, Seq from 1, empty final packet."""
    if session.driver_type != 3:
        raise DriveError("SEND_AUDIO needs a session created with DriverType 3")
    fields.check_types(data, {"VideoSeiInfo": str})
    audio = fields.text(data, "Audio", max_bytes=MAX_AUDIO_B64)
    seq = fields.integer(data, "Seq", low=1)
    final = fields.flag(data, "IsFinal")
    try:
        pcm = base64.b64decode(audio, validate=True)
    except binascii.Error as exc:
        raise DriveError("Audio must be Base64") from exc
    if len(pcm) % 2:
        raise DriveError("Audio must be 16-bit PCM (an even number of bytes)")
    if not pcm and not final:
        raise DriveError("Audio is empty")
    if len(pcm) > MAX_PACKET:
        raise DriveError(f"Audio carries {len(pcm)} bytes: a packet is 160 ms (5120 bytes) at most")
    error = speaker.audio(req_id, seq=seq, pcm=pcm, final=final)
    if error:
        raise DriveError(error)


def _heartbeat(session: IvhSession, speaker: Speaker, req_id: str, data: dict[str, Any]) -> None:
    """SEND_HEARTBEAT: ``Text: "PING"``; only keeps the channel and session alive."""
    if data.get("Text") != "PING":
        raise DriveError('heartbeat Text must be "PING"')


COMMANDS: dict[str, Command] = {
    "SEND_TEXT": _send_text,
    "SEND_STREAMTEXT": _send_stream,
    "SEND_AUDIO": _send_audio,
    "SEND_HEARTBEAT": _heartbeat,
}
