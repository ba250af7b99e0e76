"""Decoding a payload: on text and stream topics, anything but a JSON object is plain text."""

from __future__ import annotations

import pytest

from bridge.core.requests import decode_payload
from bridge.core.topics import Route
from bridge.errors import RequestError

TEXT = Route(action="ivh/send_text", session_id="s1", shorthand=True, leaf="text")
STREAM = Route(action="ivh/stream_text", session_id="s1", shorthand=True, leaf="stream")
DESK = Route(action="desk/send_stream", session_id="s1", shorthand=True, leaf="stream")
GET = Route(action="desk/get_session_state", session_id="s1", shorthand=True, leaf="get")


@pytest.mark.parametrize("route, field", [(TEXT, "text"), (STREAM, "text"), (DESK, "chunk")])
@pytest.mark.parametrize(
    "text", ["{hello}", "{", " {oops", '{"unclosed": 1', "[1, 2]", '"quoted"', "42", "hi", ""]
)
def test_what_is_not_a_json_object_is_said_as_it_is(route: Route, field: str, text: str) -> None:
    assert decode_payload(route, text.encode()) == {field: text, "session_id": "s1"}


def test_a_json_object_is_a_request() -> None:
    assert decode_payload(TEXT, b' {"text": "hi", "transaction": 3}') == {
        "text": "hi",
        "transaction": 3,
        "session_id": "s1",
    }


@pytest.mark.parametrize("raw", [b'{"text": NaN}', b'{"text": "x", "n": 1e400}'])
def test_an_object_with_non_finite_numbers_is_refused_not_spoken(raw: bytes) -> None:
    with pytest.raises(RequestError) as caught:
        decode_payload(TEXT, raw)
    assert caught.value.code == "invalid_payload"


def test_other_topics_still_want_json() -> None:
    with pytest.raises(RequestError) as caught:
        decode_payload(GET, b"{hello}")
    assert caught.value.code == "invalid_json"
