"""Command-channel frames (docs/protocol.md A.5, A.6): upstream shape, downstream classification."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core.envelope import dumps
from bridge.features.ivh.frames import (
    drive,
    heartbeat,
    parse_downstream,
    pieces,
    snake,
    speech_role,
)


def test_drive_frame_has_the_documented_envelope() -> None:
    frame = json.loads(drive("S1", "SEND_TEXT", {"Text": "你好"}, "a" * 32))
    assert frame == {
        "Header": {},
        "Payload": {"ReqId": "a" * 32, "SessionId": "S1", "Command": "SEND_TEXT",
                    "Data": {"Text": "你好"}},
    }  # fmt: skip


def test_heartbeat_is_ping_with_a_fresh_req_id() -> None:
    one, two = (json.loads(heartbeat("S1"))["Payload"] for _ in range(2))
    assert one["Command"] == "SEND_HEARTBEAT" and one["Data"] == {"Text": "PING"}
    assert len(one["ReqId"]) == 32 and one["ReqId"] != two["ReqId"]


@pytest.mark.parametrize(
    ("name", "expected"),
    [("SpeakStatus", "speak_status"), ("ReqId", "req_id"), ("TTSSupport", "tts_support"),
     ("Type", "type"), ("IsHighLight", "is_high_light"), ("already_snake", "already_snake")],
)  # fmt: skip
def test_snake(name: str, expected: str) -> None:
    assert snake(name) == expected


@pytest.mark.parametrize("wrapped", [True, False])
def test_speak_status_wrapped_or_flat(wrapped: bool) -> None:
    body = {"Type": 3, "SessionId": "S", "ReqId": "r", "Seq": 2, "SpeakStatus": "TextStart"}
    raw = json.dumps({"Header": {"Code": 0}, "Payload": body} if wrapped else body)
    frame = parse_downstream(raw)
    assert frame.event_type == "speak_status"
    assert frame.data["speak_status"] == "TextStart" and frame.data["req_id"] == "r"
    assert frame.data["raw"] == json.loads(raw)
    assert frame.replay_key == ("r", "TextStart", 2, None)


@pytest.mark.parametrize(
    ("body", "event"),
    [
        ({"Type": 4, "Text": "hi", "Final": True}, "llm_content"),
        ({"Type": 5, "Text": "thinking"}, "llm_thinking"),
        ({"Type": 9, "ErrorCode": 110015, "ErrorMsg": "wrong time"}, "drive_failed"),
        ({"Type": 3, "SpeakStatus": "Error"}, "drive_failed"),
        ({"Type": 3, "SpeakStatus": "TextOver", "ErrorCode": 5}, "drive_failed"),
        ({"Type": 7, "Whatever": 1}, "downstream"),
        ({"NoType": True}, "downstream"),
    ],
)
def test_event_types(body: dict[str, object], event: str) -> None:
    frame = parse_downstream(json.dumps({"Payload": body}))
    assert frame.event_type == event
    assert all(snake(key) in frame.data for key in body)


@pytest.mark.parametrize(
    ("header", "body", "event"),
    [
        ({"Code": 110016, "Message": "drive failed"}, {}, "drive_failed"),
        ({"Code": "110016"}, {"ReqId": "r"}, "drive_failed"),
        ({"Code": 110016}, {"Type": 3, "SpeakStatus": "TextStart"}, "drive_failed"),
        ({"Code": 0, "Message": "ok"}, {"Type": 3, "SpeakStatus": "TextStart"}, "speak_status"),
        ({"Code": "0"}, {}, "downstream"),
        ({"Code": 110016}, {"Type": 4, "Text": "hi"}, "llm_content"),
        ({"Code": None}, {}, "downstream"),
        ({"Code": "E42"}, {}, "drive_failed"),  # as a Payload ErrorCode: any other value
        ("not an object", {}, "downstream"),
    ],
)
def test_an_error_code_in_the_header_is_a_failed_drive(
    header: object, body: dict[str, object], event: str
) -> None:
    """IVH puts errors in `Header.Code` (A.1); a frame that carries one there is a failure
    like a Payload `ErrorCode`, for a speak-status frame or one without a type."""
    frame = parse_downstream(json.dumps({"Header": header, "Payload": body}))
    assert frame.event_type == event


def test_only_speak_status_is_deduplicated() -> None:
    assert parse_downstream(json.dumps({"Type": 4, "ReqId": "r"})).replay_key is None


@pytest.mark.parametrize("raw", ["not json", b"\xff\xfe", "[1, 2]", "42"])
def test_garbage_becomes_a_downstream_event(raw: str | bytes) -> None:
    frame = parse_downstream(raw)
    assert frame.event_type == "downstream" and "raw" in frame.data


@pytest.mark.parametrize(
    ("command", "data", "role"),
    [
        ("SEND_TEXT", {"Text": "hi"}, (True, False)),
        ("SEND_TEXT", {"Text": "", "Interrupt": True}, (False, True)),
        ("SEND_STREAMTEXT", {"Text": "a", "Seq": 1}, (True, False)),
        ("SEND_STREAMTEXT", {"Text": "b", "Seq": 2}, (False, False)),
        ("SEND_STREAMTEXT", {"Text": "", "Interrupt": True, "Seq": 3}, (False, True)),
        ("SEND_HEARTBEAT", {"Text": "PING"}, (False, False)),
    ],
)
def test_speech_role(command: str, data: dict[str, object], role: tuple[bool, bool]) -> None:
    assert speech_role(command, data) == role


def test_a_frame_nested_too_deep_for_the_parser() -> None:
    frame = parse_downstream("[" * 30_000 + "]" * 30_000)
    assert (frame.event_type, frame.data["error"]) == ("downstream", "nested too deeply")


def test_a_frame_too_deep_to_echo_is_refused_and_its_event_can_be_written() -> None:
    frame = parse_downstream('{"Type": 4, "Content": ' + "[" * 900 + "]" * 900 + "}")
    assert (frame.event_type, frame.data["error"]) == ("downstream", "nested too deeply")
    dumps({"type": frame.event_type, "data": frame.data})  # what the emitter does with it


_VALUES = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner),
    max_leaves=10,
)
_FRAMES = st.fixed_dictionaries(
    {},
    optional={
        "Type": st.sampled_from([3, 4, 9]) | _VALUES,
        "ReqId": _VALUES,
        "SpeakStatus": st.sampled_from(["TextStart", "Error"]) | _VALUES,
        "Seq": _VALUES,
        "FinalType": _VALUES,
        "ErrorCode": _VALUES,
    },
)


@given(_FRAMES, st.booleans())
def test_any_frame_gives_an_event_that_can_be_written(fields: dict[str, Any], wrap: bool) -> None:
    """Whatever the cloud sends: an event the emitter can write, and a replay key (if any)
    that can be looked up."""
    frame = parse_downstream(json.dumps({"Payload": fields} if wrap else fields))
    dumps({"type": frame.event_type, "data": frame.data})
    if frame.replay_key is not None:
        hash(frame.replay_key)


@given(st.text(max_size=3000), st.integers(4, 1200))
def test_pieces_cut_between_characters_within_the_limit(text: str, limit: int) -> None:
    parts = pieces(text, limit)
    assert "".join(parts) == text
    assert all(len(p.encode()) <= limit for p in parts)
    assert all(parts) or parts == [""]
    # as few as a cut between characters allows: each piece but the last is nearly full
    assert all(len(p.encode()) > limit - 4 for p in parts[:-1])
