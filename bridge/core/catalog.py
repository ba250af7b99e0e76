"""The topic tree of one configuration, as data: what `topics` prints and AsyncAPI describes.

Every address is built by `bridge.core.topics` with `{session_id}` standing for a session id, so the
catalogue cannot drift from the topics the bridge really uses.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from bridge.config import Settings
from bridge.core.actions import ActionSpec
from bridge.core.topics import SHORTHANDS, DiscoveryTopics, Topics

SID = "{session_id}"
INSTANCE = "{instance_id}"
Kind = Literal["state", "event", "request", "response", "command", "discovery"]


@dataclass(frozen=True, slots=True, kw_only=True)
class TopicDoc:
    """One topic (or topic pattern) of the tree."""

    key: str
    address: str
    kind: Kind
    summary: str
    inbound: bool = False
    retained: bool = False
    action: str | None = None

    @property
    def direction(self) -> str:
        """`in` (to the bridge) or `out` (from it)."""
        return "in" if self.inbound else "out"

    def display(self) -> str:
        """The address with `<sid>` for the session id, as the README writes it."""
        return self.address.replace(SID, "<sid>")


def catalog(settings: Settings, specs: list[ActionSpec]) -> list[TopicDoc]:
    """Every topic a bridge with `settings` publishes or listens to."""
    t = Topics(settings.mqtt.base_topic)
    docs = _bridge_topics(t)
    for spec in specs:
        key = spec.key.replace("/", "_")
        docs.append(
            TopicDoc(
                key=f"request_{key}",
                address=t.request(spec.key),
                kind="request",
                summary=spec.summary,
                inbound=True,
                action=spec.key,
            )
        )
        docs.append(
            TopicDoc(
                key=f"response_{key}",
                address=t.response(spec.key),
                kind="response",
                summary=f"The answer to {spec.key}.",
                action=spec.key,
            )
        )
    docs += _session_topics(t)
    if settings.cluster.enabled:
        docs += _cluster_topics(t)
    if settings.homeassistant.enabled:
        docs += _discovery_topics(DiscoveryTopics(settings.homeassistant.prefix))
    return docs


def _out(key: str, address: str, kind: Kind, summary: str, *, retained: bool) -> TopicDoc:
    return TopicDoc(key=key, address=address, kind=kind, summary=summary, retained=retained)


def _bridge_topics(t: Topics) -> list[TopicDoc]:
    return [
        _out("bridge_state", t.state, "state", "online/offline; the last will", retained=True),
        _out("bridge_info", t.info, "state", "Version, services, redacted config.", retained=True),
        _out("bridge_health", t.health, "state", "Periodic health.", retained=True),
        _out("bridge_event", t.bridge_event, "event", "Bridge-level events.", retained=False),
    ]


def _cluster_topics(t: Topics) -> list[TopicDoc]:
    """The membership topics of a cluster (docs/scale-out.md)."""
    return [
        _out(
            "cluster_instance",
            t.instance(INSTANCE),
            "state",
            "An instance's membership: joining, active or leaving, and what it owns.",
            retained=True,
        ),
        _out(
            "cluster_release",
            t.release(INSTANCE),
            "event",
            "An instance released the sessions it no longer owns.",
            retained=False,
        ),
        _out(
            "cluster_desk_forward",
            t.desk_forward(SID),
            "event",
            "A Desk callback received by an instance that does not own the session, for its owner.",
            retained=False,
        ),
    ]


def _session_topics(t: Topics) -> list[TopicDoc]:
    docs = [
        _out("ivh_sessions", t.ivh_sessions, "state", "Every live IVH session.", retained=True),
        _out("ivh_state", t.ivh_state(SID), "state", "An IVH session's state.", retained=True),
        _out("ivh_channel", t.ivh_channel(SID), "state", "Its command channel.", retained=True),
        _out("ivh_event", t.event("ivh", SID), "event", "IVH session events.", retained=False),
        _out("desk_state", t.desk_state(SID), "state", "A Desk session's state.", retained=True),
        _out(
            "desk_event",
            t.event("desk", SID),
            "event",
            "Desk session events, polled and from Tencent's callback.",
            retained=False,
        ),
    ]
    for service, leaves in SHORTHANDS.items():
        for leaf, action in leaves.items():
            docs.append(
                TopicDoc(
                    key=f"{service}_{leaf}",
                    address=t.shorthand(service, SID, leaf),
                    kind="command",
                    summary=_SHORTHAND_NOTES.get(action, f"Shorthand for {action}."),
                    inbound=True,
                    action=action,
                )
            )
    return docs


_SHORTHAND_NOTES = {
    "ivh/send_audio": "Shorthand for ivh/send_audio, bytes only: a WAV (audio/wav) or raw PCM "
    "pieces (audio/L16;rate=16000); empty ends a live utterance.",
}


def _discovery_topics(ha: DiscoveryTopics) -> list[TopicDoc]:
    config = ha.device_config("{object_id}")
    return [
        TopicDoc(
            key="ha_status",
            address=ha.status,
            kind="command",
            inbound=True,
            summary="Home Assistant's birth message: online republishes discovery.",
        ),
        _out("ha_config", config, "discovery", "Device discovery configs.", retained=True),
    ]
