"""The only module that builds or parses topic strings (docs/topics.md)."""

from __future__ import annotations

import re
from dataclasses import dataclass

from bridge.ids import valid_session_id

# Per-session shorthand topic leaf -> action (docs/topics.md).
SHORTHANDS: dict[str, dict[str, str]] = {
    "ivh": {
        "close": "ivh/close_session",
        "get": "ivh/get_session",
        "text": "ivh/send_text",
        "stream": "ivh/stream_text",
        "interrupt": "ivh/interrupt",
        "command": "ivh/send_command",
        "audio": "ivh/send_audio",
    },
    "desk": {
        "stream": "desk/send_stream",
        "get": "desk/get_session_state",
        "watch": "desk/watch",
        "transfer": "desk/transfer_to_human",
        "end": "desk/end_session",
    },
}


@dataclass(frozen=True, slots=True)
class Route:
    """Where an incoming message goes: an action, and the session id a shorthand topic carried."""

    action: str
    session_id: str | None = None
    shorthand: bool = False
    leaf: str = ""


@dataclass(frozen=True, slots=True)
class BadRoute:
    """A message on a subscribed topic that names no valid action or session."""

    reason: str
    action: str | None = None


@dataclass(frozen=True)
class Topics:
    """Every topic of one bridge, under its base topic."""

    base: str

    # -- bridge (docs/topics.md) ------------------------------------------------------------------
    @property
    def state(self) -> str:
        """Retained online/offline state, also the last will."""
        return f"{self.base}/bridge/state"

    @property
    def info(self) -> str:
        """Retained version and effective config."""
        return f"{self.base}/bridge/info"

    @property
    def health(self) -> str:
        """Retained periodic health."""
        return f"{self.base}/bridge/health"

    @property
    def bridge_event(self) -> str:
        """Bridge-level events."""
        return f"{self.base}/bridge/event"

    def request(self, action: str) -> str:
        """Where a client publishes a request for `action`."""
        return f"{self.base}/bridge/request/{action}"

    def response(self, action: str) -> str:
        """Where the bridge answers `action` when the request had no Response Topic."""
        return f"{self.base}/bridge/response/{action}"

    def client_response(self, client_id: str) -> str:
        """A tool's private MQTT 5 Response Topic (the bridge never subscribes to it)."""
        return f"{self.base}/bridge/client/{client_id}/response"

    # -- cluster (docs/scale-out.md) ----------------------------------------------------------
    def instance(self, instance_id: str) -> str:
        """Retained membership document of one instance."""
        return f"{self.base}/bridge/instances/{instance_id}"

    @property
    def instances(self) -> str:
        """The filter matching every instance's membership document."""
        return self.instance("+")

    def release(self, instance_id: str) -> str:
        """Where an instance announces it released the sessions it no longer owns."""
        return f"{self.base}/bridge/release/{instance_id}"

    @property
    def releases(self) -> str:
        """The filter matching every instance's release announcements."""
        return self.release("+")

    def desk_forward(self, session_id: str) -> str:
        """Where an instance hands a Desk callback to the session's owner (docs/scale-out.md)."""
        return f"{self.base}/bridge/forward/desk/{session_id}"

    @property
    def desk_forwards(self) -> str:
        """The filter matching every forwarded Desk callback."""
        return self.desk_forward("+")

    def desk_forward_of(self, topic: str) -> str | None:
        """The session id of a forwarded Desk callback's topic, else None."""
        sid = _leaf_after(topic, f"{self.base}/bridge/forward/desk/")
        return sid if valid_session_id(sid) else None

    def instance_of(self, topic: str) -> str | None:
        """The instance id of a membership document topic, else None."""
        return _leaf_after(topic, f"{self.base}/bridge/instances/")

    def releaser_of(self, topic: str) -> str | None:
        """The instance id of a release announcement topic, else None."""
        return _leaf_after(topic, f"{self.base}/bridge/release/")

    def is_bridge_topic(self, topic: str) -> bool:
        """Whether `topic` is under `<base>/bridge/` (an instance's own, not a session's)."""
        return topic.startswith(f"{self.base}/bridge/")

    def states(self, service: str) -> str:
        """The filter matching every retained session state of `service`."""
        return self.session(service, "+", "state")

    def state_session(self, service: str, topic: str) -> str | None:
        """The session id of a retained `<base>/<service>/<sid>/state` topic, else None."""
        head, tail = f"{self.base}/{service}/", "/state"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        sid = topic[len(head) : -len(tail)]
        return sid if valid_session_id(sid) else None

    # -- sessions (docs/topics.md) -------------------------------------------------------------
    @property
    def ivh_sessions(self) -> str:
        """Retained snapshot of every live IVH session."""
        return f"{self.base}/ivh/sessions"

    def session(self, service: str, session_id: str, leaf: str) -> str:
        """`<base>/<service>/<sid>/<leaf>`; the id must already be validated."""
        return f"{self.base}/{service}/{session_id}/{leaf}"

    def ivh_state(self, session_id: str) -> str:
        """Retained IVH session state."""
        return self.session("ivh", session_id, "state")

    def ivh_channel(self, session_id: str) -> str:
        """Retained command-channel state."""
        return self.session("ivh", session_id, "channel")

    def desk_state(self, session_id: str) -> str:
        """Retained Desk session state."""
        return self.session("desk", session_id, "state")

    def event(self, service: str, session_id: str) -> str:
        """Per-session event stream."""
        return self.session(service, session_id, "event")

    def shorthand(self, service: str, session_id: str, leaf: str) -> str:
        """A per-session command topic, e.g. `<base>/ivh/<sid>/text`."""
        if leaf not in SHORTHANDS[service]:
            raise ValueError(f"{service} has no {leaf!r} shorthand")
        return self.session(service, session_id, leaf)

    # -- inbound -------------------------------------------------------------------------------
    def subscriptions(self, services: tuple[str, ...] = ("ivh", "desk")) -> list[str]:
        """Every command topic filter the bridge subscribes to."""
        subs = [f"{self.base}/bridge/request/#"]
        for service in services:
            subs += [f"{self.base}/{service}/+/{leaf}" for leaf in SHORTHANDS[service]]
        return subs

    def parse(self, topic: str) -> Route | BadRoute | None:
        """Resolve an inbound topic; None when it is not a command topic of this bridge."""
        prefix = self.base + "/"
        if not topic.startswith(prefix):
            return None
        parts = topic[len(prefix) :].split("/")
        if parts[:2] == ["bridge", "request"]:
            return _parse_request(parts[2:])
        if len(parts) == 3 and parts[0] in SHORTHANDS:
            return _parse_shorthand(parts[0], parts[1], parts[2])
        return None


def _parse_request(rest: list[str]) -> Route | BadRoute:
    if len(rest) != 2 or not all(rest):
        return BadRoute("a request topic is <base>/bridge/request/<service>/<action>")
    return Route(action="/".join(rest))


def _parse_shorthand(service: str, session_id: str, leaf: str) -> Route | BadRoute | None:
    action = SHORTHANDS[service].get(leaf)
    if action is None:
        return None
    if not valid_session_id(session_id):
        return BadRoute("the session id in the topic is not valid", action=action)
    return Route(action=action, session_id=session_id, shorthand=True, leaf=leaf)


def _leaf_after(topic: str, head: str) -> str | None:
    if not topic.startswith(head):
        return None
    leaf = topic[len(head) :]
    return leaf if leaf and "/" not in leaf else None


_OBJECT_ID_UNSAFE = re.compile(r"[^A-Za-z0-9_-]")


def discovery_object_id(*parts: str) -> str:
    """A Home Assistant discovery object id: only `[A-Za-z0-9_-]`, parts joined by `_`."""
    return "_".join(_OBJECT_ID_UNSAFE.sub("_", part) for part in parts)


@dataclass(frozen=True)
class DiscoveryTopics:
    """Home Assistant MQTT discovery topics under a prefix (default `homeassistant`)."""

    prefix: str

    @property
    def status(self) -> str:
        """Home Assistant's birth and will topic (`online` / `offline`)."""
        return f"{self.prefix}/status"

    def device_config(self, object_id: str) -> str:
        """A device-based discovery config: `<prefix>/device/<object_id>/config`."""
        return f"{self.prefix}/device/{object_id}/config"

    @property
    def device_configs(self) -> str:
        """The filter matching every device-based discovery config."""
        return self.device_config("+")

    def object_id(self, topic: str) -> str | None:
        """The object id of a device config topic, else None."""
        head, tail = f"{self.prefix}/device/", "/config"
        if not (topic.startswith(head) and topic.endswith(tail)):
            return None
        object_id = topic[len(head) : -len(tail)]
        return object_id if object_id and "/" not in object_id else None
