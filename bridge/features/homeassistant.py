"""Home Assistant MQTT discovery (opt-in, `[homeassistant]`): device-based discovery payloads.

One device for the bridge (connectivity, active IVH sessions) and one per live IVH session
(status sensor, close button, text entity that speaks). Configs are retained, so the link
re-asserts them after a reconnect; they are published again when Home Assistant's birth message
(`<prefix>/status` = `online`) arrives, and cleared (empty retained) when a session closes.
A session that closed while the bridge was stopped is found among the retained configs the
bridge receives at subscribe time, and cleared once the first IVH polls had time to run.
Keys follow Home Assistant's documented device discovery schema (`dev`, `o`, `cmps`, `p`).
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

from bridge import __version__
from bridge.core import jsontext
from bridge.core.envelope import Publisher, dumps
from bridge.core.inbound import Inbound
from bridge.core.topics import DiscoveryTopics, Topics, discovery_object_id
from bridge.features.deps import Deps
from bridge.features.ivh.tracker import SessionState

log = logging.getLogger(__name__)

ORIGIN = {"name": "tencent2mqtt", "sw": __version__}
STATUSES = ["preparing", "in_progress", "closed", "failed", "unknown"]
LIVE_COUNT = (
    "{{ value_json.sessions | rejectattr('status', 'in', ['closed', 'failed']) | list | count }}"
)


class HomeAssistant:
    """Publishes and removes discovery configs as the bridge and its IVH sessions come and go."""

    name = "homeassistant"
    upstream = False  # not a Tencent service: no reachability, not in `bridge/info` services

    def __init__(
        self,
        *,
        topics: Topics,
        prefix: str,
        publisher: Publisher,
        services: list[str],
        settle: float = 15.0,
    ) -> None:
        self._topics = topics
        self._ha = DiscoveryTopics(prefix)
        self._publisher = publisher
        self._services = services
        self._settle = settle
        self._bridge_id = discovery_object_id("tencent2mqtt", topics.base)
        self._session_prefix = discovery_object_id("tencent2mqtt", topics.base, "ivh", "")
        self._sessions: dict[str, str] = {}  # session id -> discovery object id
        self._found: set[str] = set()  # session object ids retained in the broker
        self._swept = False

    def subscriptions(self) -> list[str]:
        """Topics the link must subscribe to: the birth message and the retained configs."""
        return [self._ha.status, self._ha.device_configs]

    def start(self) -> None:
        """At start: the bridge device and the sessions known so far."""
        self.publish_all()

    async def aclose(self) -> None:
        """Nothing to finish: the retained configs stay for the next start."""

    def status(self) -> dict[str, Any]:
        """Its part of `bridge/health`: the session devices published."""
        return {"session_devices": len(self._sessions)}

    def handles(self, msg: Inbound) -> bool:
        """Take Home Assistant's birth message and discovery configs; False for anything else."""
        if msg.topic == self._ha.status:
            if msg.payload.strip() == b"online":
                log.info("homeassistant: online; publishing discovery again")
                self.publish_all()
            return True
        object_id = self._ha.object_id(msg.topic)
        if object_id is None:
            return False
        candidate = msg.retain and not self._swept and object_id.startswith(self._session_prefix)
        if candidate and self._owned(msg.payload):
            self._found.add(object_id)
        return True

    def _owned(self, payload: bytes) -> bool:
        """Whether a retained config is one of this bridge's session devices (by its topics)."""
        try:
            status = jsontext.loads(payload)["cmps"]["status"]["state_topic"]
        except (ValueError, TypeError, KeyError):
            return False
        head, tail = f"{self._topics.base}/ivh/", "/state"
        if not (isinstance(status, str) and status.startswith(head) and status.endswith(tail)):
            return False
        return "/" not in status[len(head) : -len(tail)]

    async def run(self) -> None:
        """Once the first polls had time to run, clear configs of sessions no longer live."""
        await asyncio.sleep(self._settle)
        self.sweep()

    def sweep(self) -> None:
        """Clear the retained configs of sessions this bridge does not know as live."""
        live = set(self._sessions.values())
        for object_id in sorted(self._found - live):
            log.info("homeassistant: removing the stale device %s", object_id)
            self._publisher.clear_retained(self._ha.device_config(object_id))
        self._found.clear()
        self._swept = True

    def publish_all(self) -> None:
        """Publish the bridge device and every live session device."""
        self._publisher.set_retained(
            self._ha.device_config(self._bridge_id), dumps(self.bridge_config())
        )
        for sid in self._sessions:
            self._publish_session(sid)

    def session_changed(self, before: SessionState | None, after: SessionState) -> None:
        """IVH transition hook: a live session gets a device; a closed one loses it."""
        sid = after.session_id
        if after.terminal:
            object_id = self._sessions.pop(sid, None)
            if object_id is not None:
                self._publisher.clear_retained(self._ha.device_config(object_id))
        elif sid not in self._sessions:
            self._sessions[sid] = discovery_object_id("tencent2mqtt", self._topics.base, "ivh", sid)
            self._publish_session(sid)

    def _publish_session(self, sid: str) -> None:
        topic = self._ha.device_config(self._sessions[sid])
        self._publisher.set_retained(topic, dumps(self.session_config(sid)))

    # -- payloads -----------------------------------------------------------------------------
    def _availability(self) -> list[dict[str, str]]:
        return [
            {
                "topic": self._topics.state,
                "value_template": "{{ value_json.state }}",
                "payload_available": "online",
                "payload_not_available": "offline",
            }
        ]

    def bridge_config(self) -> dict[str, Any]:
        """The bridge device: connectivity, and the active sessions count when IVH is on."""
        uid = self._bridge_id
        cmps: dict[str, Any] = {
            "connectivity": {
                "p": "binary_sensor",
                "unique_id": f"{uid}_connectivity",
                "name": "Connectivity",
                "device_class": "connectivity",
                "entity_category": "diagnostic",
                "state_topic": self._topics.state,
                "value_template": "{{ value_json.state }}",
                "payload_on": "online",
                "payload_off": "offline",
            }
        }
        if "ivh" in self._services:
            cmps["active_sessions"] = {
                "p": "sensor",
                "unique_id": f"{uid}_active_sessions",
                "name": "Active sessions",
                "icon": "mdi:account-voice",
                "state_class": "measurement",
                "state_topic": self._topics.ivh_sessions,
                "value_template": LIVE_COUNT,
                "availability": self._availability(),
            }
        device = {"ids": [uid], "name": f"tencent2mqtt ({self._topics.base})"}
        device |= {"mf": "tencent2mqtt", "mdl": "Bridge", "sw": __version__}
        return {"dev": device, "o": ORIGIN, "cmps": cmps, "qos": 1}

    def session_config(self, sid: str) -> dict[str, Any]:
        """One IVH session's device: status, close, speak."""
        uid = self._sessions.get(sid) or discovery_object_id(
            "tencent2mqtt", self._topics.base, "ivh", sid
        )
        cmps = {
            "status": {
                "p": "sensor",
                "unique_id": f"{uid}_status",
                "name": "Status",
                "device_class": "enum",
                "options": STATUSES,
                "state_topic": self._topics.ivh_state(sid),
                "value_template": "{{ value_json.status }}",
            },
            "close": {
                "p": "button",
                "unique_id": f"{uid}_close",
                "name": "Close",
                "command_topic": self._topics.shorthand("ivh", sid, "close"),
                "payload_press": "{}",
            },
            "say": {
                "p": "text",
                "unique_id": f"{uid}_say",
                "name": "Say",
                "mode": "text",
                "max": 255,
                "command_topic": self._topics.shorthand("ivh", sid, "text"),
            },
        }
        device = {"ids": [uid], "name": f"Digital human {sid}", "mf": "Tencent Cloud"}
        device |= {"mdl": "IVH session", "sw": __version__, "via_device": self._bridge_id}
        return {
            "dev": device,
            "o": ORIGIN,
            "cmps": cmps,
            "availability": self._availability(),
            "qos": 1,
        }


def build_homeassistant(deps: Deps, services: list[str]) -> HomeAssistant | None:
    """Discovery, hooked to IVH session changes, when `[homeassistant]` enables it."""
    cfg = deps.settings.homeassistant
    if not cfg.enabled:
        return None
    ha = HomeAssistant(
        topics=deps.topics,
        prefix=cfg.prefix,
        publisher=deps.publisher,
        services=services,
        settle=max(1.0, 3 * deps.settings.ivh.poll_interval),
    )
    deps.session_changes.append(ha.session_changed)
    return ha
