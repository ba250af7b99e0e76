"""The action router over a real broker: envelopes, error codes, response topics, v5 and 3.1.1."""

from __future__ import annotations

import json

import pytest

from tests.support.bridge import running, settings_for
from tests.support.broker import Broker
from tests.support.mqtt_probe import Probe, response_properties


async def test_health_check_echoes_transaction(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)), Probe(broker.port, base) as probe:
        reply = await probe.request("bridge/health_check", {})
    assert reply["status"] == "ok"
    assert reply["data"]["mqtt"]["connected"] is True
    assert isinstance(reply["elapsed_ms"], float | int)


@pytest.mark.parametrize("protocol", [5, 4])
@pytest.mark.parametrize(
    ("topic", "payload", "code"),
    [
        ("bridge/request/bridge/health_check", b'{"transaction": 1, bad', "invalid_json"),
        ("bridge/request/bridge/health_check", b"\xff\xfe{}", "invalid_json"),
        ("bridge/request/bridge/health_check", b'{"unknown_field": 1}', "invalid_payload"),
        ("bridge/request/bridge/health_check", b"[1, 2]", "invalid_payload"),
        ("bridge/request/bridge/no_such_action", b"{}", "unknown_action"),
        ("bridge/request/nope/close_session", b"{}", "unknown_action"),
        ("bridge/request/ivh/close_session", b'{"session_id": "bad id/+"}', "invalid_session_id"),
        ("bridge/request/ivh/close_session", b'{"session_id": "$SYS"}', "invalid_session_id"),
        ("ivh/bad$id/close", b"", "invalid_session_id"),
        (
            "bridge/request/bridge/health_check",
            b'{"pad": "' + b"x" * 70000 + b'"}',
            "payload_too_large",
        ),
    ],
)
async def test_error_codes(
    broker: Broker, base: str, protocol: int, topic: str, payload: bytes, code: str
) -> None:
    async with (
        running(settings_for(broker.url, base)),
        Probe(broker.port, base, protocol=protocol) as probe,
    ):
        await probe.publish(topic, payload)
        reply = await probe.wait_for(lambda m: "/bridge/response/" in m.topic)
    body = reply.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]
    assert set(body["error"]) == {"code", "message", "retryable", "upstream_code", "http_status"}


async def test_disabled_service_is_named(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)), Probe(broker.port, base) as probe:
        reply = await probe.request("ivh/close_session", {"session_id": "abc"})
    assert reply["error"]["code"] == "service_disabled"


async def test_retained_command_is_refused_live(broker: Broker, base: str) -> None:
    """MQTT 5 Retain As Published shows the retain flag of a live command."""
    async with running(settings_for(broker.url, base)), Probe(broker.port, base) as probe:
        await probe.publish("bridge/request/bridge/health_check", {"transaction": 5}, retain=True)
        reply = await probe.wait_json("bridge/response/bridge/health_check")
        await probe.publish("bridge/request/bridge/health_check", b"", retain=True)  # clean up
    assert reply["error"]["code"] == "retained_command"
    assert reply["transaction"] == 5


async def test_retained_command_at_subscribe_under_311(broker: Broker, base: str) -> None:
    """Under 3.1.1 the bridge sees retained commands delivered when it subscribes."""
    async with Probe(broker.port, base, protocol=4) as probe:
        await probe.publish("bridge/request/bridge/health_check", {"transaction": 9}, retain=True)
        settings = settings_for(broker.url, base, mqtt={"protocol": 4})
        async with running(settings):
            reply = await probe.wait_json("bridge/response/bridge/health_check")
        await probe.publish("bridge/request/bridge/health_check", b"", retain=True)
    assert reply["error"]["code"] == "retained_command"


async def test_response_topic_and_correlation_data(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)), Probe(broker.port, base) as probe:
        props = response_properties(f"{base}/replies/me", b"\x00corr-42")
        await probe.publish("bridge/request/bridge/health_check", {}, properties=props)
        reply = await probe.wait_for(lambda m: m.topic == f"{base}/replies/me")
    assert reply.correlation_data == b"\x00corr-42"
    assert reply.json()["status"] == "ok"
    assert not probe.on("bridge/response/bridge/health_check")


async def test_wildcard_response_topic_falls_back(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)), Probe(broker.port, base) as probe:
        props = response_properties(f"{base}/replies/+", b"c")
        await probe.publish("bridge/request/bridge/health_check", {}, properties=props)
        reply = await probe.wait_json("bridge/response/bridge/health_check")
    assert reply["status"] == "ok"


async def test_bad_request_topic_goes_to_bridge_event(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)), Probe(broker.port, base) as probe:
        await probe.publish("bridge/request/only-one-level", {})
        event = await probe.wait_json("bridge/event")
    assert event["type"] == "request_error"
    assert event["data"]["code"] == "unknown_action"


async def test_info_is_retained_and_redacted(broker: Broker, base: str) -> None:
    settings = settings_for(
        broker.url,
        base,
        mqtt={"username": "u", "password": "mqtt-pass-SECRET"},
        ivh={"appkey": "k", "access_token": "ivh-token-SECRET"},
        desk={"sdkappid": 1400000001, "identifier": "admin", "secret_key": "desk-key-SECRET"},
    )
    async with running(settings), Probe(broker.port, base) as probe:
        info = await probe.wait_json("bridge/info")
        await probe.wait_json("bridge/health")
        raw = b"".join(m.payload for m in probe.messages)
    assert info["config"]["mqtt"]["password"] == "**********"
    assert info["mqtt_protocol"] == "5"
    assert b"SECRET" not in raw


async def test_handler_error_does_not_stop_bridge(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)) as app, Probe(broker.port, base) as probe:

        async def boom(payload: object) -> None:
            raise RuntimeError("boom")

        action = app.registry.get("bridge/health_check")
        assert action is not None
        original = action.spec.handler
        object.__setattr__(action.spec, "handler", lambda owner, p: boom(p))
        reply = await probe.request("bridge/health_check")
        object.__setattr__(action.spec, "handler", original)
        again = await probe.request("bridge/health_check")
    assert reply["error"]["code"] == "internal_error"
    assert "boom" not in json.dumps(reply)
    assert again["status"] == "ok"
