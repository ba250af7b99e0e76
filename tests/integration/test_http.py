"""The HTTP endpoint (`http.listen`): /healthz, /readyz and /metrics of a live bridge."""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from prometheus_client.openmetrics.parser import (
    text_string_to_metric_families as openmetrics_families,
)
from prometheus_client.parser import text_string_to_metric_families

from bridge.app import App
from bridge.features.desk import feature as desk_feature
from tests.support.bridge import running, settings_for
from tests.support.broker import Broker, free_port
from tests.support.cloud import Admin, emulator, upstream_sections
from tests.support.mqtt_probe import Probe

# family (as the reference parser names it) -> type: what the issue asks /metrics to show
FAMILIES = {
    "tencent2mqtt_actions": "counter",  # by action and outcome
    "tencent2mqtt_upstream_calls": "counter",
    "tencent2mqtt_upstream_latency_seconds": "histogram",
    "tencent2mqtt_upstream_retries": "counter",
    "tencent2mqtt_ivh_open_channels": "gauge",
    "tencent2mqtt_desk_watched_sessions": "gauge",
    "tencent2mqtt_ivh_channel_queue_depth": "gauge",
    "tencent2mqtt_desk_stream_queue_depth": "gauge",
    "tencent2mqtt_mqtt_outbox_depth": "gauge",
    "tencent2mqtt_mqtt_reconnects": "counter",
    "tencent2mqtt_mqtt_connected": "gauge",
}


async def get(app: App, path: str) -> httpx.Response:
    url = f"http://{app.settings.http.listen}{path}"
    async with httpx.AsyncClient(timeout=5) as client, asyncio.timeout(10):
        while True:  # the server starts with the bridge's task group
            try:
                return await client.get(url)
            except httpx.ConnectError:
                await asyncio.sleep(0.05)


async def until_ready(app: App, expected: bool) -> httpx.Response:
    async with asyncio.timeout(10):
        while True:
            response = await get(app, "/readyz")
            if (response.status_code == 200) == expected:
                return response
            await asyncio.sleep(0.05)


@pytest.fixture
async def world(broker: Broker, base: str) -> AsyncIterator[tuple[App, Admin, Probe]]:
    async with emulator() as emu, Admin(emu) as admin:
        sections: dict[str, Any] = upstream_sections(emu)
        sections["http"] = {"listen": f"127.0.0.1:{free_port()}"}
        async with (
            running(settings_for(broker.url, base, **sections)) as app,
            Probe(broker.port, base) as probe,
        ):
            yield app, admin, probe


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


async def test_healthz_readyz_and_metrics(world: tuple[App, Admin, Probe]) -> None:
    app, admin, probe = world
    health = await get(app, "/healthz")
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    ready = await until_ready(app, True)
    assert ready.json() == {"ready": True, "checks": {"mqtt": True, "ivh": True, "desk": True}}

    assert (await probe.request("bridge/health_check"))["status"] == "ok"
    sid = await admin.desk_session(state="chatbot")
    assert (await probe.request("desk/watch", {"session_id": sid}))["status"] == "ok"
    bad = await probe.request("ivh/get_session", {"session_id": "nope"})
    assert bad["status"] == "error"

    response = await get(app, "/metrics")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    text = response.text
    found = families(text)  # the reference parser accepts the whole exposition
    for name, kind in FAMILIES.items():
        assert name in found, name
        assert found[name].type == kind, name
        exposed = f"{name}_total" if kind == "counter" else name
        assert f"# HELP {exposed} " in text and f"# TYPE {exposed} {kind}" in text
    actions = {
        (s.labels["action"], s.labels["outcome"]): s.value
        for s in found["tencent2mqtt_actions"].samples
    }
    assert actions[("bridge/health_check", "ok")] == 1
    assert actions[("desk/watch", "ok")] == 1
    assert any(a == "ivh/get_session" and o != "ok" for a, o in actions)
    watched = found["tencent2mqtt_desk_watched_sessions"].samples[0].value
    assert watched == 1
    latency = found["tencent2mqtt_upstream_latency_seconds"].samples
    assert any(s.name.endswith("_count") and s.value >= 1 for s in latency)


async def test_readyz_is_503_while_a_service_is_unreachable(
    world: tuple[App, Admin, Probe],
) -> None:
    app, admin, _ = world
    await until_ready(app, True)
    await admin.fault("listsessionofuin", 1000, http_status=503)
    failing = await until_ready(app, False)
    assert failing.status_code == 503
    assert failing.json()["checks"] == {"mqtt": True, "ivh": False, "desk": True}
    assert (await get(app, "/healthz")).status_code == 200  # the process is still up
    retries = families((await get(app, "/metrics")).text)["tencent2mqtt_upstream_retries"]
    assert sum(s.value for s in retries.samples if s.labels["service"] == "ivh") >= 1
    await admin.call("DELETE", "/faults")
    await until_ready(app, True)


async def test_readyz_is_503_without_mqtt(own_broker: Broker, base: str) -> None:
    settings = settings_for(own_broker.url, base, http={"listen": f"127.0.0.1:{free_port()}"})
    async with running(settings) as app:
        await until_ready(app, True)
        own_broker.kill()
        down = await until_ready(app, False)
        assert down.json() == {"ready": False, "checks": {"mqtt": False}}
        metrics = families((await get(app, "/metrics")).text)
        assert metrics["tencent2mqtt_mqtt_connected"].samples[0].value == 0
        own_broker.start()
        await until_ready(app, True)
        metrics = families((await get(app, "/metrics")).text)
        assert metrics["tencent2mqtt_mqtt_reconnects"].samples[0].value == 1


def series(text: str) -> set[tuple[str, tuple[tuple[str, str], ...]]]:
    """Every sample's name and labels: what grows when a label is unbounded."""
    return {
        (sample.name, tuple(sorted(sample.labels.items())))
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


async def test_metrics_stay_parseable_and_bounded_under_hostile_action_names(
    world: tuple[App, Admin, Probe],
) -> None:
    app, _, probe = world
    hostile = await probe.request('a"b/c\\d')  # a quote and a backslash, unescaped before
    assert hostile["error"]["code"] == "unknown_action"
    assert (await probe.request("bridge/health_check"))["status"] == "ok"
    before = (await get(app, "/metrics")).text
    found = families(before)  # the whole page parses
    actions = {s.labels["action"]: s.value for s in found["tencent2mqtt_actions"].samples}
    assert actions["unknown"] == 1 and actions["bridge/health_check"] == 1
    assert not any('"' in a or "\\" in a for a in actions)

    rng = random.Random(17)
    alphabet = "abcXYZ019 \"\\'{}=,é漢/"  # mosquitto refuses control characters
    for _ in range(200):  # each is answered with an error, or a `request_error` bridge event
        name = "".join(rng.choice(alphabet) for _ in range(rng.randint(1, 24))).strip("/") or "x"
        await probe.publish(f"bridge/request/{name}", {"transaction": 1})
    assert (await probe.request("bridge/health_check"))["status"] == "ok"  # after all 200
    after = (await get(app, "/metrics")).text
    found = families(after)
    unknown = [s for s in found["tencent2mqtt_actions"].samples if s.labels["action"] == "unknown"]
    assert sum(s.value for s in unknown) == 201
    named = {s.labels["action"] for s in found["tencent2mqtt_actions"].samples}
    assert named <= {"unknown", "bridge/health_check"}
    assert series(after) - series(before) <= {
        ("tencent2mqtt_actions_total", (("action", "unknown"), ("outcome", code)))
        for code in ("bad_topic", "invalid_session_id")
    }  # at most a new outcome of `unknown`, never a new action
    assert len(after) < len(before) * 1.2


async def test_metrics_speak_openmetrics_when_asked(world: tuple[App, Admin, Probe]) -> None:
    app, _, probe = world
    await probe.request('a"b/c\\d')
    url = f"http://{app.settings.http.listen}/metrics"
    async with httpx.AsyncClient(timeout=5) as client:
        await get(app, "/metrics")
        response = await client.get(url, headers={"Accept": "application/openmetrics-text"})
    assert response.headers["content-type"].startswith("application/openmetrics-text")
    assert response.text.endswith("# EOF\n")
    parsed = {f.name for f in openmetrics_families(response.text)}  # type: ignore[no-untyped-call]
    assert "tencent2mqtt_actions" in parsed


def records(caplog: pytest.LogCaptureFixture, text: str) -> list[str]:
    return [r.getMessage() for r in caplog.records if text in r.getMessage()]


async def until_logged(caplog: pytest.LogCaptureFixture, text: str) -> None:
    async with asyncio.timeout(10):
        while not records(caplog, text):
            await asyncio.sleep(0.05)


def wrong_key_sections(emu: Any, **http: Any) -> dict[str, Any]:
    sections: dict[str, Any] = upstream_sections(emu, ivh={"enabled": False})
    sections["desk"]["secret_key"] = "0" * 64  # not the app's key
    if http:
        sections["http"] = http
    return sections


async def test_a_wrong_desk_key_is_logged_at_start_with_no_session_watched(
    broker: Broker, base: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with emulator() as emu:
        settings = settings_for(broker.url, base, **wrong_key_sections(emu))
        async with running(settings) as app:
            await until_logged(caplog, "auth_failed")
            health = app.snapshot()["desk"]
    assert health["reachable"] is False and health["last_error"]["code"] == "auth_failed"
    assert health["last_error"]["at"].endswith("Z")  # ISO 8601, like every time in health
    said = [r for r in caplog.records if r.name.startswith("bridge") and "auth_failed" in r.message]
    assert len(said) == 1 and said[0].levelno == logging.ERROR
    assert said[0].getMessage().startswith("desk: ") and "check the credentials" in said[0].message


async def test_readyz_asks_desk_with_a_real_call_when_nothing_else_tells(
    broker: Broker, base: str, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    caplog.set_level(logging.INFO)
    monkeypatch.setattr(desk_feature, "VERIFY_AFTER", 0.0)  # every /readyz is "long after"
    async with emulator() as emu, Admin(emu) as admin:
        sections = wrong_key_sections(emu, listen=f"127.0.0.1:{free_port()}")
        async with running(settings_for(broker.url, base, **sections)) as app:
            await until_logged(caplog, "auth_failed")
            for _ in range(5):
                calls = len(await admin.journal("get_session_state", own_checks=True))
                response = await get(app, "/readyz")
                assert response.status_code == 503
                assert response.json()["checks"] == {"mqtt": True, "desk": False}
                async with asyncio.timeout(5):  # each probe started a real call
                    while len(await admin.journal("get_session_state", own_checks=True)) == calls:
                        await asyncio.sleep(0.02)
    said = [r for r in caplog.records if r.name.startswith("bridge") and "auth_failed" in r.message]
    assert len(said) == 1  # once per change of state, not per call


async def test_readyz_does_not_call_desk_when_a_call_just_told(broker: Broker, base: str) -> None:
    async with emulator() as emu, Admin(emu) as admin:
        sections: dict[str, Any] = upstream_sections(emu, ivh={"enabled": False})
        sections["http"] = {"listen": f"127.0.0.1:{free_port()}"}
        async with running(settings_for(broker.url, base, **sections)) as app:
            ready = await until_ready(app, True)
            assert ready.json()["checks"]["desk"] is True
            calls = len(await admin.journal("get_session_state", own_checks=True))
            assert calls == 1  # the check at start
            await get(app, "/readyz")
            assert len(await admin.journal("get_session_state", own_checks=True)) == calls


async def test_an_outage_and_its_recovery_are_each_logged_once(
    world: tuple[App, Admin, Probe], caplog: pytest.LogCaptureFixture
) -> None:
    app, admin, _ = world
    caplog.set_level(logging.INFO)
    await until_ready(app, True)
    await admin.fault("listsessionofuin", 1000, http_status=503)
    await until_ready(app, False)
    await asyncio.sleep(1.0)  # polls every 0.2 s keep failing
    await admin.call("DELETE", "/faults")
    await until_ready(app, True)
    assert len(records(caplog, "ivh: session poll failed")) == 1
    recovered = records(caplog, "ivh: recovered after")
    assert len(recovered) == 1 and "(was upstream_unavailable)" in recovered[0]


async def test_first_health_says_unknown_until_a_call_says_otherwise(
    broker: Broker, base: str
) -> None:
    async with emulator() as emu, Admin(emu) as admin:
        await admin.fault("get_session_state", 1, latency_ms=1500)  # the first call is slow
        sections: dict[str, Any] = upstream_sections(emu, ivh={"enabled": False})
        async with running(settings_for(broker.url, base, **sections)) as app:
            assert app.snapshot()["desk"]["reachable"] is None
            assert app.snapshot()["desk"]["last_error"] is None
            async with asyncio.timeout(5):
                while app.snapshot()["desk"]["reachable"] is None:
                    await asyncio.sleep(0.05)
            assert app.snapshot()["desk"]["reachable"] is True


async def test_readyz_answers_at_once_while_its_desk_check_is_slow(
    broker: Broker, base: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A readiness probe times out in about a second: known is answered, the check goes on."""
    monkeypatch.setattr(desk_feature, "VERIFY_AFTER", 0.0)
    async with emulator() as emu, Admin(emu) as admin:
        sections: dict[str, Any] = upstream_sections(emu, ivh={"enabled": False})
        sections["http"] = {"listen": f"127.0.0.1:{free_port()}"}
        async with running(settings_for(broker.url, base, **sections)) as app:
            await until_ready(app, True)
            await admin.fault("get_session_state", 1, latency_ms=3000)
            started = asyncio.get_running_loop().time()
            ready = await get(app, "/readyz")
            assert asyncio.get_running_loop().time() - started < 1.0
            assert ready.status_code == 200
