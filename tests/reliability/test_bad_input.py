"""Bad input (docs/topics.md, docs/reliability.md): a corpus where each entry gets its documented
error and makes no
API call. The property-based fuzz lives in test_fuzz.py."""

from __future__ import annotations

import json
from typing import Any

import pytest
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.core import dispatcher, jsontext
from bridge.features.desk.feature import VERIFY_SESSION
from tests.support import figures
from tests.support.mqtt_probe import Received
from tests.support.world import World

SID = "sess-1"  # a valid id: only the payload is wrong
BIG = 70 * 1024
REQ = "bridge/request/"

# (topic relative to base, payload, expected error code); answered on the action's response topic
CORPUS: list[tuple[str, bytes, str]] = [
    # invalid JSON and UTF-8
    (REQ + "desk/get_session_state", b'{"session_id": ', "invalid_json"),
    (REQ + "desk/get_session_state", b"{'single': 'quotes'}", "invalid_json"),
    (REQ + "desk/get_session_state", b'{"a": NaN', "invalid_json"),
    (REQ + "ivh/create_session", b"\xc3\x28", "invalid_json"),
    (f"desk/{SID}/stream", b"\xff\xfe\xfd", "invalid_json"),
    (f"ivh/{SID}/text", b"\xed\xa0\x80", "invalid_json"),  # an encoded surrogate
    (f"desk/{SID}/get", b"{not json}", "invalid_json"),
    (REQ + "desk/get_session_state", b"[" * 30_000, "invalid_json"),  # RecursionError in json
    (REQ + "bridge/health_check", b'{"a": ' * 5_000 + b"1" + b"}" * 5_000, "invalid_json"),
    # parsed, but echoed in the reply the encoder could not write: refused as too deep
    (
        REQ + "bridge/health_check",
        b'{"transaction": ' + b"[" * 900 + b"]" * 900 + b"}",
        "invalid_json",
    ),
    # JSON in form, but not numbers JSON has: never echoed back (a reply with NaN is not JSON)
    (REQ + "bridge/health_check", b'{"transaction": NaN}', "invalid_payload"),
    (REQ + "bridge/health_check", b'{"transaction": 1e400}', "invalid_payload"),
    (REQ + "bridge/health_check", b'{"transaction": [-Infinity]}', "invalid_payload"),
    (f"desk/{SID}/watch", b'{"interval": Infinity}', "invalid_payload"),
    (f"desk/{SID}/watch", b'{"interval": NaN, "transaction": 2}', "invalid_payload"),
    # not an object, wrong types
    (REQ + "desk/get_session_state", b"[]", "invalid_payload"),
    (REQ + "desk/get_session_state", b'"sess-1"', "invalid_payload"),
    (REQ + "desk/get_session_state", b"42", "invalid_payload"),
    (REQ + "desk/send_stream", b'{"session_id": "sess-1", "chunk": 5}', "invalid_payload"),
    (REQ + "desk/send_stream", b'{"session_id": "sess-1", "finish": "maybe"}', "invalid_payload"),
    (f"desk/{SID}/watch", b'{"interval": "fast"}', "invalid_payload"),
    (f"desk/{SID}/watch", b'{"interval": -1}', "invalid_payload"),
    (REQ + "ivh/send_text", b'{"session_id": "sess-1", "text": ["x"]}', "invalid_payload"),
    (
        REQ + "ivh/create_session",
        b'{"virtualman_project_id": 1, "user_id": "u", "protocol": "webrtc", "driver_type": "x"}',
        "invalid_payload",
    ),
    (REQ + "ivh/send_command", b'{"session_id": "sess-1", "command": 7}', "invalid_payload"),
    (REQ + "ivh/create_session", b"{}", "invalid_payload"),
    (REQ + "desk/get_session_state", b"{}", "invalid_payload"),
    (REQ + "desk/get_session_state", b'{"session_id": "a", "expires_at": true}', "invalid_payload"),
    # unknown fields
    (REQ + "desk/get_session_state", b'{"session_id": "sess-1", "bogus": 1}', "invalid_payload"),
    (REQ + "bridge/health_check", b'{"verbose": true}', "invalid_payload"),
    (f"ivh/{SID}/interrupt", b'{"now": true}', "invalid_payload"),
    (f"desk/{SID}/get", b'{"session_id": "other"}', "invalid_payload"),
    # huge payloads
    (f"desk/{SID}/stream", b"x" * BIG, "payload_too_large"),
    (REQ + "ivh/create_session", b'{"pad": "' + b"y" * (1024 * 1024) + b'"}', "payload_too_large"),
    (f"ivh/{SID}/text", json.dumps({"text": "é" * 3000}).encode(), "payload_too_large"),
    # session ids with / + # $, control characters, bad shapes (in payloads and topics)
    *[
        (REQ + "desk/get_session_state", json.dumps({"session_id": bad}).encode(), code)
        for bad, code in [
            ("a/b", "invalid_session_id"),
            ("a+b", "invalid_session_id"),
            ("a#b", "invalid_session_id"),
            ("$SYS", "invalid_session_id"),
            ("a\u0001b", "invalid_session_id"),
            ("a\nb", "invalid_session_id"),
            ("a\u0000b", "invalid_session_id"),
            ("-leading", "invalid_session_id"),
            ("x" * 129, "invalid_session_id"),
            ("", "invalid_session_id"),
            ("café", "invalid_session_id"),
            (17, "invalid_session_id"),
        ]
    ],
    ("ivh/$sid/close", b"", "invalid_session_id"),
    ("desk/a b/get", b"", "invalid_session_id"),
    ("desk/ü/get", b"", "invalid_session_id"),
    (f"ivh/{'z' * 200}/get", b"", "invalid_session_id"),
    # unknown actions
    (REQ + "desk/no_such_action", b"{}", "unknown_action"),
    (REQ + "nope/get_session_state", b"{}", "unknown_action"),
    (REQ + "$SYS/x", b"{}", "unknown_action"),
    # passed deadlines
    (REQ + "desk/get_session_state", b'{"session_id": "sess-1", "expires_at": 1}', "expired"),
    (
        f"desk/{SID}/get",
        b'{"expires_at": "2001-01-01T00:00:00Z", "transaction": 1}',
        "expired",
    ),
    (
        REQ + "desk/get_session_state",
        b'{"session_id": "a", "expires_at": "soon"}',
        "invalid_payload",
    ),
    (REQ + "bridge/health_check", b'{"expires_at": 1' + b"0" * 400 + b"}", "invalid_payload"),
]

# unknown or malformed request topics: no action to answer for, so a bridge event
EVENT_CORPUS: list[str] = [
    REQ + "only-one-level",
    REQ + "a/b/c",
    REQ + "desk//get_session_state",
    REQ[:-1] + "/",
]


def _action_of(topic: str) -> str:
    if topic.startswith(REQ):
        return topic[len(REQ) :]
    service, _, leaf = topic.split("/")
    return {
        ("desk", "stream"): "desk/send_stream",
        ("desk", "get"): "desk/get_session_state",
        ("desk", "watch"): "desk/watch",
        ("ivh", "text"): "ivh/send_text",
        ("ivh", "close"): "ivh/close_session",
        ("ivh", "get"): "ivh/get_session",
        ("ivh", "interrupt"): "ivh/interrupt",
    }[(service, leaf)]


async def _answer(w: World, topic: str, start: int) -> Received:
    full = f"{w.probe.base}/bridge/response/{_action_of(topic)}"
    return await w.probe.wait_for(lambda m: m.topic == full, 5, start)


async def _api_calls(w: World) -> list[dict[str, Any]]:
    return [
        e
        for e in await w.admin.journal("")
        if e.get("kind") != "ws_in"
        and "listsessionofuin" not in str(e.get("path"))
        and e.get("session_id") != VERIFY_SESSION  # the bridge's own credentials check
    ]


async def test_corpus_each_gets_its_documented_error(world: World) -> None:
    w = world
    before = await _api_calls(w)
    for topic, payload, code in CORPUS:
        start = len(w.probe.messages)
        await w.probe.publish(topic, payload)
        body = (await _answer(w, topic, start)).json()
        assert body["status"] == "error", (topic, payload[:80], body)
        assert body["error"]["code"] == code, (topic, payload[:80], body)
        assert set(body["error"]) == {
            "code",
            "message",
            "retryable",
            "upstream_code",
            "http_status",
        }
    for topic in EVENT_CORPUS:
        start = len(w.probe.messages)
        await w.probe.publish(topic, b"{}")
        event = await w.probe.wait_for(
            lambda m: m.topic == f"{w.probe.base}/bridge/event", 5, start
        )
        assert event.json()["data"]["code"] == "unknown_action"
    figures.add("bad_input_corpus", len(CORPUS) + len(EVENT_CORPUS))
    assert await _api_calls(w) == before, "an invalid request reached the API"
    assert (await w.probe.request("bridge/health_check"))["status"] == "ok"


async def test_non_finite_numbers_are_refused_and_the_reply_is_strict_json(world: World) -> None:
    w = world
    for payload in (b'{"transaction": NaN}', b'{"transaction": 1e400}', b'{"interval": Infinity}'):
        start = len(w.probe.messages)
        await w.probe.publish(f"desk/{SID}/watch", payload)
        raw = (await _answer(w, f"desk/{SID}/watch", start)).payload
        body = jsontext.loads(raw)  # refuses NaN and Infinity, as JSON.parse does
        assert body["error"]["code"] == "invalid_payload", body
        assert body["transaction"] is None


async def test_retained_commands_are_refused_and_change_nothing(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    before = await _api_calls(w)
    for topic in (f"desk/{sid}/get", f"{REQ}desk/get_session_state"):
        start = len(w.probe.messages)
        await w.probe.publish(topic, {"session_id": sid, "transaction": "r"}, retain=True)
        body = (await _answer(w, topic, start)).json()
        await w.probe.publish(topic, b"", retain=True)  # clearing it is not a command
        assert body["error"]["code"] == "retained_command" and body["transaction"] == "r"
    figures.add("bad_input_corpus", 2)
    assert await _api_calls(w) == before


def _props(**values: Any) -> Properties:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    for name, value in values.items():
        setattr(props, name, value)
    return props


async def test_mqtt5_properties_of_the_wrong_kind(world: World) -> None:
    """Properties the bridge cannot use are ignored, never trusted: the answer still arrives."""
    w = world
    base = w.probe.base
    health = REQ + "bridge/health_check"
    cases = [
        # a wildcard Response Topic cannot be published to: default response topic instead
        (_props(ResponseTopic=f"{base}/replies/#", CorrelationData=b"c1"), "default"),
        # Correlation Data without a Response Topic: answered on the default topic
        (_props(CorrelationData=b"\x00\xff"), "default"),
        # a content type and payload format that say nothing the bridge needs
        (_props(ContentType="application/xml", PayloadFormatIndicator=1), "default"),
        # a Response Topic that is a command topic: the answer would come back as a request
        (_props(ResponseTopic=f"{base}/{health}", CorrelationData=b"loop"), "default"),
        (_props(ResponseTopic=f"{base}/desk/{SID}/get", CorrelationData=b"loop"), "default"),
        # a long expiry and user properties change nothing
        (_props(MessageExpiryInterval=3600, UserProperty=[("k", "v")]), "default"),
    ]
    for props, where in cases:
        start = len(w.probe.messages)
        await w.probe.publish(health, {"transaction": where}, properties=props)
        reply = await w.probe.wait_for(
            lambda m: m.topic == f"{base}/bridge/response/bridge/health_check", 5, start
        )
        assert reply.json()["status"] == "ok" and reply.json()["transaction"] == where
    figures.add("bad_input_corpus", len(cases))
    assert (await w.probe.request("bridge/health_check"))["status"] == "ok"
    bounced = [
        m for m in w.probe.messages if m.correlation_data == b"loop" and b"status" in m.payload
    ]
    assert not bounced, "an answer was published on a command topic"
    answers = w.probe.on("bridge/response/bridge/health_check")
    assert len(answers) == len(cases) + 1  # one answer each, nothing came back as a request


async def test_a_bug_in_the_checks_is_answered_not_dropped(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Whatever goes wrong before an action runs, the request gets an answer (internal_error,
    with its transaction), as a failing action does."""

    def broken(*_: object) -> bool:
        raise RuntimeError("a bug")

    monkeypatch.setattr(dispatcher, "expired", broken)
    w = world
    start = len(w.probe.messages)
    await w.probe.publish(REQ + "bridge/health_check", b'{"transaction": "t-1"}')
    body = (await _answer(w, REQ + "bridge/health_check", start)).json()
    assert (body["status"], body["error"]["code"], body["transaction"]) == (
        "error",
        "internal_error",
        "t-1",
    )
    monkeypatch.undo()
    start = len(w.probe.messages)
    await w.probe.publish(REQ + "bridge/health_check", b'{"transaction": "t-2"}')
    assert (await _answer(w, REQ + "bridge/health_check", start)).json()["status"] == "ok"
