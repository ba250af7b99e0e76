"""Home Assistant MQTT discovery: device-based configs from a live bridge, checked by their keys."""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from jinja2 import StrictUndefined
from jinja2.sandbox import ImmutableSandboxedEnvironment

from bridge.emulator import Emulator
from bridge.features.desk.callbacks import EVENT_TYPES
from bridge.features.homeassistant_desk import DESK_EVENTS, EVENT_TEMPLATE
from tests.support.bridge import running, settings_for
from tests.support.broker import Broker
from tests.support.cloud import emulator, upstream_sections
from tests.support.mqtt_probe import Probe, Received

# Home Assistant's documented keys: device discovery root, device, origin, per platform.
ROOT_REQUIRED = {"dev", "o", "cmps"}
DEVICE_KEYS = {"ids", "name", "mf", "mdl", "sw", "via_device"}
ORIGIN_KEYS = {"name", "sw", "url"}
AVAILABILITY_KEYS = {"topic", "value_template", "payload_available", "payload_not_available"}
COMMON = {"p", "unique_id", "name", "availability", "entity_category", "icon", "qos"}
PLATFORM_KEYS = {
    "binary_sensor": {"state_topic", "value_template", "payload_on", "payload_off", "device_class"},
    "sensor": {"state_topic", "value_template", "device_class", "options", "state_class"},
    "button": {"command_topic", "payload_press"},
    "text": {"command_topic", "mode", "max", "min"},
}
REQUIRED = {"binary_sensor": {"state_topic"}, "sensor": {"state_topic"}, "button": set()}
REQUIRED["text"] = {"command_topic"}


def ha_sections(emu: Emulator, prefix: str) -> dict[str, dict[str, Any]]:
    """IVH against the emulator, discovery under `prefix`."""
    sections = upstream_sections(emu, desk={"enabled": False})
    sections["homeassistant"] = {"enabled": True, "prefix": prefix}
    return sections


@contextlib.asynccontextmanager
async def ha_bridge(broker: Broker, base: str, prefix: str) -> AsyncIterator[tuple[Probe, Probe]]:
    """A bridge with discovery on, a probe on Home Assistant's prefix and one on the base."""
    async with (
        emulator() as emu,
        Probe(broker.port, prefix) as ha,
        running(settings_for(broker.url, base, **ha_sections(emu, prefix))),
        Probe(broker.port, base) as probe,
    ):
        yield ha, probe


def check_config(config: dict[str, Any]) -> None:
    """Assert a device discovery payload uses only documented keys, and has the required ones."""
    assert set(config) >= ROOT_REQUIRED, config
    assert set(config) <= ROOT_REQUIRED | {"availability", "qos", "state_topic", "command_topic"}
    assert set(config["dev"]) <= DEVICE_KEYS and {"ids", "name"} <= set(config["dev"])
    assert set(config["o"]) <= ORIGIN_KEYS and "name" in config["o"]
    for avail in config.get("availability", []):
        assert set(avail) <= AVAILABILITY_KEYS and "topic" in avail
    unique_ids = set()
    for cid, cmp in config["cmps"].items():
        assert cid.replace("_", "").isalnum()
        platform = cmp["p"]
        assert set(cmp) <= COMMON | PLATFORM_KEYS[platform], (cid, cmp)
        assert REQUIRED[platform] <= set(cmp) and "unique_id" in cmp
        for avail in cmp.get("availability", []):
            assert set(avail) <= AVAILABILITY_KEYS
        unique_ids.add(cmp["unique_id"])
    assert len(unique_ids) == len(config["cmps"])


def is_config(prefix: str, object_id_part: str) -> Any:
    def match(m: Received) -> bool:
        return (
            m.topic.startswith(f"{prefix}/device/")
            and m.topic.endswith("/config")
            and object_id_part in m.topic
        )

    return match


async def test_discovery_of_bridge_and_session_and_removal(broker: Broker, base: str) -> None:
    prefix = f"ha{base}"
    async with ha_bridge(broker, base, prefix) as (ha, probe):
        bridge_msg = await ha.wait_for(is_config(prefix, f"tencent2mqtt_{base}"))
        bridge = bridge_msg.json()
        check_config(bridge)
        conn = bridge["cmps"]["connectivity"]
        assert conn["p"] == "binary_sensor" and conn["device_class"] == "connectivity"
        assert conn["state_topic"] == f"{base}/bridge/state"
        assert bridge["cmps"]["active_sessions"]["state_topic"] == f"{base}/ivh/sessions"

        reply = await probe.request(
            "ivh/create_session", {"virtualman_project_id": "p", "user_id": "u"}
        )
        sid = reply["data"]["session_id"]
        msg = await ha.wait_for(is_config(prefix, f"ivh_{sid}"))
        session = msg.json()
        check_config(session)
        cmps = session["cmps"]
        assert cmps["status"]["state_topic"] == f"{base}/ivh/{sid}/state"
        assert cmps["close"]["command_topic"] == f"{base}/ivh/{sid}/close"
        assert cmps["say"]["command_topic"] == f"{base}/ivh/{sid}/text"
        assert session["availability"][0]["topic"] == f"{base}/bridge/state"
        assert session["dev"]["via_device"] in bridge["dev"]["ids"]

        async with Probe(broker.port, prefix) as late:  # configs are retained
            kept = await late.wait_for(is_config(prefix, f"ivh_{sid}"))
            assert kept.retain and kept.json() == session

        # Home Assistant restarts: its birth message brings every config back
        start = len(ha.messages)
        await ha.publish("status", b"online")
        again = await ha.wait_for(is_config(prefix, f"ivh_{sid}"), start=start)
        assert again.json() == session
        await ha.wait_for(is_config(prefix, f"tencent2mqtt_{base}"), start=start)

        # the close button's payload closes the session; its device goes away
        await probe.client.publish(cmps["close"]["command_topic"], b"{}", qos=1)
        await probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "closed")
        gone = await ha.wait_for(
            lambda m: is_config(prefix, f"ivh_{sid}")(m) and m.payload == b"", start=start
        )
        assert gone.topic == msg.topic


async def test_speaking_through_the_text_entity(broker: Broker, base: str) -> None:
    prefix = f"ha{base}"
    async with ha_bridge(broker, base, prefix) as (ha, probe):
        reply = await probe.request(
            "ivh/create_session", {"virtualman_project_id": "p", "user_id": "u"}
        )
        sid = reply["data"]["session_id"]
        await probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
        await probe.request("ivh/start_session", {"session_id": sid})
        config = (await ha.wait_for(is_config(prefix, f"ivh_{sid}"))).json()
        await probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected")
        # Home Assistant publishes the entity's plain text value on its command topic
        await probe.client.publish(config["cmps"]["say"]["command_topic"], b"hi", qos=1)
        answer = await probe.wait_json("bridge/response/ivh/send_text")
        assert answer["status"] == "ok", json.dumps(answer)


async def test_disabled_by_default(broker: Broker, base: str) -> None:
    async with Probe(broker.port, "homeassistant") as ha, running(settings_for(broker.url, base)):
        async with Probe(broker.port, base) as probe:
            await probe.request("bridge/health_check")
        assert not [m for m in ha.messages if base in m.topic]


async def test_stale_session_devices_are_removed_at_start(broker: Broker, base: str) -> None:
    prefix = f"ha{base}"
    stale = f"{prefix}/device/tencent2mqtt_{base}_ivh_gone-while-stopped/config"
    other = f"{prefix}/device/someone_else/config"
    lookalike = f"{prefix}/device/tencent2mqtt_{base}_ivh_x/config"  # another bridge's device
    left = {"cmps": {"status": {"state_topic": f"{base}/ivh/gone-while-stopped/state"}}}
    foreign = {"cmps": {"connectivity": {"state_topic": f"{base}_ivh_x/bridge/state"}}}
    async with Probe(broker.port, prefix) as ha:
        configs = {stale: left, other: {"dev": {}}, lookalike: foreign}
        for topic, config in configs.items():  # an earlier run's, another integration's
            await ha.client.publish(topic, json.dumps(config).encode(), qos=1, retain=True)
        async with (
            emulator() as emu,
            running(settings_for(broker.url, base, **ha_sections(emu, prefix))),
            Probe(broker.port, base) as probe,
        ):
            reply = await probe.request(
                "ivh/create_session", {"virtualman_project_id": "p", "user_id": "u"}
            )
            live = (await ha.wait_for(is_config(prefix, reply["data"]["session_id"]))).topic
            await ha.wait_for(lambda m: m.topic == stale and m.payload == b"", timeout=10)
        cleared = {m.topic for m in ha.messages if m.payload == b""}
        assert not cleared & {other, lookalike, live}
        for topic in (other, lookalike):
            await ha.client.publish(topic, b"", qos=1, retain=True)


# The MQTT event platform: `event_types` and `state_topic` are required (HA's mqtt event docs).
PLATFORM_KEYS["event"] = {"state_topic", "value_template", "event_types", "device_class"}
REQUIRED["event"] = {"state_topic", "event_types"}


async def test_a_watched_desk_session_gets_a_device_with_an_event_entity(
    broker: Broker, base: str
) -> None:
    prefix = f"ha{base}"
    async with emulator() as emu, Probe(broker.port, prefix) as ha:
        sections = upstream_sections(emu, ivh={"enabled": False})
        sections["homeassistant"] = {"enabled": True, "prefix": prefix}
        async with (
            running(settings_for(broker.url, base, **sections)),
            Probe(broker.port, base) as probe,
        ):
            sid = (await emu_session(emu))["session_id"]
            await probe.request("desk/watch", {"session_id": sid})
            msg = await ha.wait_for(is_config(prefix, f"desk_{sid}"))
            config = msg.json()
            check_config(config)
            events = config["cmps"]["events"]
            assert events["p"] == "event" and events["state_topic"] == f"{base}/desk/{sid}/event"
            assert "user_message" in events["event_types"]
            transfer = config["cmps"]["transfer"]
            assert transfer["command_topic"] == f"{base}/desk/{sid}/transfer"
            await _press_and_render(probe, config, sid)
            await probe.request("desk/unwatch", {"session_id": sid})
            await ha.wait_for(lambda m: m.topic == msg.topic and m.payload == b"")


async def _press_and_render(probe: Probe, config: dict[str, Any], sid: str) -> None:
    """Press the transfer button as Home Assistant would, then render the event entity's and
    the state sensor's templates against what the bridge published."""
    cmps = config["cmps"]
    start = len(probe.messages)
    await probe.client.publish(cmps["transfer"]["command_topic"], cmps["transfer"]["payload_press"])
    event = await probe.wait_for(
        lambda m: m.topic == cmps["events"]["state_topic"] and b"state_changed" in m.payload,
        start=start,
    )
    rendered = json.loads(ha_render(cmps["events"]["value_template"], event.payload))
    assert rendered["event_type"] == "state_changed" in cmps["events"]["event_types"]
    assert rendered["text"] == "" and rendered["seq"] == event.json()["seq"]
    after = event.json()["data"]["state"]  # queuing, or agent when one is free at once
    state = await probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == after)
    shown = ha_render(cmps["state"]["value_template"], json.dumps(state).encode())
    assert shown == after != "chatbot" and shown in cmps["state"]["options"]


def test_the_event_template_carries_message_text_and_every_type_is_declared() -> None:
    body = {"type": "user_message", "seq": 7, "data": {"text": "hello", "event": "x"}}
    rendered = json.loads(ha_render(EVENT_TEMPLATE, json.dumps(body).encode()))
    assert rendered == {"event_type": "user_message", "text": "hello", "seq": 7}
    published = set(EVENT_TYPES.values()) | {"state_changed", "session_ended", "stream_finished"}
    assert published | {"callback"} == set(DESK_EVENTS)


def ha_render(template: str, payload: bytes) -> str:
    """Render an MQTT entity's `value_template` as Home Assistant does: a sandboxed Jinja
    environment, `value_json` the parsed payload, its `to_json` filter; an undefined name
    fails here (HA would log it and render nothing)."""
    env = ImmutableSandboxedEnvironment(undefined=StrictUndefined)
    env.filters["to_json"] = json.dumps
    return env.from_string(template).render(value=payload.decode(), value_json=json.loads(payload))


async def emu_session(emu: Emulator) -> Any:
    async with httpx.AsyncClient(base_url=emu.base_url) as http:
        return (await http.post("/emulator/desk/sessions", json={})).json()
