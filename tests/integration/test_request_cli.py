"""`tencent2mqtt request`: one request against a live bridge, its answer and its exit code."""

from __future__ import annotations

import json
from typing import Any

import pytest

from tests.support.bridge import running, settings_for
from tests.support.broker import Broker, free_port
from tests.support.mqtt_probe import Probe
from tests.support.request_cli import cli


@pytest.mark.parametrize("protocol", [5, 4])
async def test_ok_response_is_printed_and_exits_0(broker: Broker, base: str, protocol: int) -> None:
    async with running(settings_for(broker.url, base)), Probe(broker.port, base) as probe:
        code, out, err = await cli(
            broker.url, base, "bridge/health_check", '{"transaction": 42}', protocol=protocol
        )
        answer: dict[str, Any] = json.loads(out)
        assert code == 0, err
        assert answer["status"] == "ok" and answer["transaction"] == 42
        assert "uptime_s" in answer["data"]
        # MQTT 5 answers on a private response topic; 3.1.1 on the shared one
        shared = [
            m for m in probe.messages if m.topic.endswith("bridge/response/bridge/health_check")
        ]
        assert bool(shared) == (protocol == 4)


async def test_error_response_exits_1(broker: Broker, base: str) -> None:
    async with running(settings_for(broker.url, base)):
        code, out, _ = await cli(broker.url, base, "ivh/get_session", '{"session_id": "s1"}')
    answer = json.loads(out)
    assert code == 1
    assert answer["status"] == "error" and answer["error"]["code"] == "service_disabled"
    # issue 17 defect 14: it said "no credentials configured" of a service disabled by config
    message = answer["error"]["message"]
    assert message == "the ivh service is disabled: ivh.enabled = false in the configuration"


async def test_no_bridge_times_out_with_3(broker: Broker, base: str) -> None:
    code, out, err = await cli(broker.url, base, "bridge/health_check", "--timeout", "0.5")
    assert code == 3 and out == ""
    assert "no answer" in err


async def test_bad_usage_exits_2(broker: Broker, base: str) -> None:
    code, _, err = await cli(broker.url, base, "bridge/health_check", "{not json")
    assert code == 2 and "not valid JSON" in err
    code, _, err = await cli(broker.url, base, "health_check")
    assert code == 2 and "<service>/<action>" in err


async def test_unreachable_broker_exits_3(base: str) -> None:
    nothing_listens = f"mqtt://127.0.0.1:{free_port()}"
    code, _, err = await cli(nothing_listens, base, "bridge/health_check", "--timeout", "2")
    assert code == 3 and "cannot connect" in err
