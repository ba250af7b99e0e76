"""Pure routing logic: topics, the action registry, payload decoding."""

from __future__ import annotations

import pytest

from bridge.core.actions import Empty, Payload, Registry, SessionPayload, action, specs_of
from bridge.core.inbound import Inbound
from bridge.core.requests import decode_payload, expired, validate
from bridge.core.topics import BadRoute, Route, Topics, valid_session_id
from bridge.errors import RequestError
from bridge.features.desk.payloads import SendStream, Watch

T = Topics("base")


@pytest.mark.parametrize(
    ("topic", "expected"),
    [
        ("base/bridge/request/ivh/close_session", Route("ivh/close_session")),
        ("base/ivh/s1/close", Route("ivh/close_session", "s1", True, "close")),
        ("base/ivh/s1/text", Route("ivh/send_text", "s1", True, "text")),
        ("base/desk/s-2/stream", Route("desk/send_stream", "s-2", True, "stream")),
        ("base/desk/s-2/watch", Route("desk/watch", "s-2", True, "watch")),
        ("base/ivh/s1/state", None),
        ("other/ivh/s1/close", None),
        ("base/ivh/sessions", None),
    ],
)
def test_parse(topic: str, expected: Route | None) -> None:
    assert T.parse(topic) == expected


def test_parse_rejects_bad_ids_and_shapes() -> None:
    bad = T.parse("base/ivh/$x/close")
    assert isinstance(bad, BadRoute) and bad.action == "ivh/close_session"
    shape = T.parse("base/bridge/request/ivh")
    assert isinstance(shape, BadRoute) and shape.action is None


@pytest.mark.parametrize("sid", ["a", "A1._:@-z", "x" * 128])
def test_valid_ids(sid: str) -> None:
    assert valid_session_id(sid)


@pytest.mark.parametrize("sid", ["", "-a", "a/b", "a+b", "a#", "$SYS", "a b", "x\n", "x" * 129, 5])
def test_invalid_ids(sid: object) -> None:
    assert not valid_session_id(sid)


def test_builders() -> None:
    assert T.state == "base/bridge/state"
    assert T.response("ivh/get_session") == "base/bridge/response/ivh/get_session"
    assert T.ivh_state("s") == "base/ivh/s/state"
    assert T.event("desk", "s") == "base/desk/s/event"
    assert "base/ivh/+/close" in T.subscriptions()


class _Text(SessionPayload):
    text: str


class _Feature:
    @action("x/say")
    async def say(self, payload: _Text) -> dict[str, str]:
        """Say something."""
        return {"said": payload.text}

    @action("x/ping", reply="when_asked")
    async def ping(self, payload: Empty) -> None:
        return None


def test_registry_takes_model_from_annotation() -> None:
    specs = {s.key: s for s in specs_of(_Feature)}
    assert specs["x/say"].model is _Text
    assert specs["x/say"].summary == "Say something."
    assert specs["x/ping"].reply == "when_asked"
    reg = Registry()
    reg.include(_Feature())
    assert reg.keys() == ["x/ping", "x/say"]
    with pytest.raises(ValueError, match="twice"):
        reg.include(_Feature())


def test_untyped_handler_fails_at_import() -> None:
    with pytest.raises(TypeError, match="Payload model"):

        class _Bad:
            @action("x/bad")
            async def bad(self, payload: dict) -> None:  # type: ignore[type-arg]
                return None


def test_bad_key_fails_at_import() -> None:
    with pytest.raises(TypeError, match="service"):

        class _Bad:
            @action("nokey")
            async def bad(self, payload: Empty) -> None:
                return None


def test_plain_text_on_text_topics() -> None:
    route = Route("ivh/send_text", "s1", True, "text")
    assert decode_payload(route, "héllo".encode()) == {"text": "héllo", "session_id": "s1"}
    assert decode_payload(route, b'{"text":"x"}') == {"text": "x", "session_id": "s1"}
    with pytest.raises(RequestError) as info:
        decode_payload(route, b'{"text":')
    assert info.value.code == "invalid_json"


def test_topic_session_conflicts_with_payload() -> None:
    route = Route("ivh/close_session", "s1", True, "close")
    with pytest.raises(RequestError):
        decode_payload(route, b'{"session_id":"s2"}')


def test_validate_names_fields_without_echoing_values() -> None:
    with pytest.raises(RequestError) as info:
        validate(_Text, {"session_id": "s", "text": 5, "extra": "SECRETVALUE"}, Route("x/say"))
    assert "text" in info.value.message and "extra" in info.value.message
    assert "SECRETVALUE" not in info.value.message


def test_expires_at() -> None:
    msg = Inbound(topic="t", payload=b"")
    assert expired(msg, {"expires_at": 1})
    assert expired(msg, {"expires_at": "2000-01-01T00:00:00Z"})
    assert not expired(msg, {"expires_at": "2999-01-01T00:00:00+00:00"})
    with pytest.raises(RequestError):
        expired(msg, {"expires_at": "soon"})


def test_mqtt_expiry_counts_time_in_the_bridge() -> None:
    msg = Inbound(topic="t", payload=b"", expiry=1, received_at=0.0)
    assert expired(msg, {})


class _P(Payload):
    a: int


def test_payload_models_are_frozen_and_strict_about_fields() -> None:
    p = _P(a=1)
    with pytest.raises(ValueError):
        p.a = 2  # type: ignore[misc]


@pytest.mark.parametrize(
    ("value", "ok"),
    [(True, True), (False, True), (1, True), (0, True), ("yes", False), ("true", False),
     (2, False), (None, False), (1.0, False)],
)  # fmt: skip
def test_flags_are_strict_but_take_tencents_0_and_1(value: object, ok: bool) -> None:
    data = {"session_id": "s1", "chunk": "x", "finish": value}
    if ok:
        assert SendStream.model_validate(data).finish is bool(value)
    else:
        with pytest.raises(ValueError):
            SendStream.model_validate(data)


def test_payloads_do_not_coerce_strings_to_numbers() -> None:
    with pytest.raises(ValueError):
        Watch.model_validate({"session_id": "s1", "interval": "5"})
    assert Watch.model_validate({"session_id": "s1", "interval": 5}).interval == 5.0
