"""Home Assistant discovery for watched Desk sessions: one device each, with an `event` entity.

Home Assistant's MQTT `event` platform takes a JSON payload with `event_type` (one of the
declared `event_types`) and keeps the other keys as attributes, so the template turns the
bridge's Desk events (docs/topics.md) into that shape, the message text included. Beside it: the
retained state as an enum sensor, and buttons for `transfer` and `end`.
"""

from __future__ import annotations

from typing import Any

from bridge import __version__
from bridge.core.topics import Topics, discovery_object_id

DESK_STATES = ["not_in_session", "chatbot", "waiting_for_agent", "queuing", "agent", "ended"]
DESK_EVENTS = [
    "state_changed",
    "session_ended",
    "stream_finished",
    "session_begin",
    "user_message",
    "bot_message",
    "agent_message",
    "transfer_started",
    "transfer_succeeded",
    "transfer_failed",
    "agent_changed",
    "session_closed",
    "user_timeout",
    "callback",
]
EVENT_TEMPLATE = (
    "{{ {'event_type': value_json.type, 'text': value_json.data.text | default(''),"
    " 'seq': value_json.seq} | to_json }}"
)


def desk_object_id(topics: Topics, sid: str) -> str:
    """The discovery object id of a Desk session's device."""
    return discovery_object_id("tencent2mqtt", topics.base, "desk", sid)


def desk_session_config(
    topics: Topics, sid: str, *, bridge_id: str, availability: list[dict[str, str]]
) -> dict[str, Any]:
    """One watched Desk session's device: state sensor, event entity, transfer and end buttons."""
    uid = desk_object_id(topics, sid)
    cmps = {
        "state": {
            "p": "sensor",
            "unique_id": f"{uid}_state",
            "name": "State",
            "device_class": "enum",
            "options": DESK_STATES,
            "state_topic": topics.desk_state(sid),
            "value_template": "{{ value_json.state }}",
        },
        "events": {
            "p": "event",
            "unique_id": f"{uid}_events",
            "name": "Events",
            "event_types": DESK_EVENTS,
            "state_topic": topics.event("desk", sid),
            "value_template": EVENT_TEMPLATE,
        },
        "transfer": _button(uid, "transfer", "Transfer to human", topics, sid),
        "end": _button(uid, "end", "End session", topics, sid),
    }
    device = {"ids": [uid], "name": f"Contact center {sid}", "mf": "Tencent Cloud"}
    device |= {"mdl": "Desk session", "sw": __version__, "via_device": bridge_id}
    origin = {"name": "tencent2mqtt", "sw": __version__}
    return {"dev": device, "o": origin, "cmps": cmps, "availability": availability, "qos": 1}


def _button(uid: str, leaf: str, name: str, topics: Topics, sid: str) -> dict[str, Any]:
    return {
        "p": "button",
        "unique_id": f"{uid}_{leaf}",
        "name": name,
        "command_topic": topics.shorthand("desk", sid, leaf),
        "payload_press": "{}",
    }
