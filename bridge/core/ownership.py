"""Which keys this bridge instance owns (docs/scale-out.md): one question, asked in one place.

A key's stateful work (a session's command channel, Desk stream and watch, a session-less action,
the IVH listing poll) belongs to exactly one active instance, chosen by rendezvous hashing: the
instance with the highest `sha256("<instance_id>/<key>")`, read as a big-endian number. Every
instance (and any operator or tool) computes the same owner without talking to the others, and
when an instance comes or goes only the keys it owned move.

Keys: a session's is its session id; a session-less action's is the action name
(`ivh/list_sessions`); the IVH listing poll's is `ivh/poll` (`POLL_KEY`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable

from bridge.core import jsontext
from bridge.core.topics import BadRoute, Route
from bridge.ids import valid_session_id

POLL_KEY = "ivh/poll"
_MAX_CACHED = 100_000  # owners remembered at most (~10 MB), forgotten all at once past that


def weight(instance_id: str, key: str) -> int:
    """The rendezvous weight of one (instance, key) pair: stable across processes and hosts."""
    digest = hashlib.sha256(f"{instance_id}/{key}".encode()).digest()
    return int.from_bytes(digest, "big")


def owner(key: str, instances: Iterable[str]) -> str | None:
    """The instance that owns `key` among `instances`; None when there is none."""
    return max(instances, key=lambda instance: weight(instance, key), default=None)


def request_key(route: Route | BadRoute, payload: bytes, *, max_payload: int) -> str:
    """The key whose owner answers a request: its session id (from the topic, else the JSON
    payload's `session_id`), else the action name. Bad input has a key too (the action, or
    `bridge/request` for a topic naming none), so exactly one instance answers it."""
    if isinstance(route, BadRoute):
        return route.action or "bridge/request"
    if route.session_id is not None:
        return route.session_id
    if b'"session_id"' in payload and len(payload) <= max_payload:
        try:
            data = jsontext.loads(payload, max_depth=jsontext.MAX_DEPTH)
        except ValueError:
            return route.action
        sid = data.get("session_id") if isinstance(data, dict) else None
        if valid_session_id(sid):
            return str(sid)
    return route.action


class Ownership:
    """This instance's answer to "do I own this key?".

    Alone (no cluster) it owns every key. In a cluster the membership feeds `set_active()` with
    the active instances as the broker delivered their documents: every instance applies the
    same documents in the same order as the requests, so all agree on each request's owner.
    """

    def __init__(self, instance_id: str, *, clustered: bool = False) -> None:
        self.instance_id = instance_id
        self.clustered = clustered
        self._active: frozenset[str] = frozenset() if clustered else frozenset({instance_id})
        # Set by the membership: False once the process finds it was frozen (it fences itself)
        self.guard: Callable[[], bool] | None = None
        # The owner of each key asked since the active set last changed: a request and the
        # `owns` count each second ask again for the same keys (a digest per instance each).
        self._owners: dict[str, str | None] = {}
        self._joining: frozenset[str] = frozenset()  # live, not active yet (cluster start)

    @property
    def active(self) -> frozenset[str]:
        """The instances that own keys now."""
        return self._active

    def set_active(self, instances: Iterable[str], *, joining: Iterable[str] = ()) -> None:
        """The active instances now (this one among them only while it is active itself),
        and the joining ones (this one among them while it is joining)."""
        self._active = frozenset(instances)
        self._joining = frozenset(joining)
        self._owners = {}

    def answers_unowned(self, key: str) -> bool:
        """No instance is active (a cluster starting): whether this instance is the one that
        answers `key`'s requests with "retry", chosen by the same rule among the joining."""
        if not self.clustered or self._active or self.instance_id not in self._joining:
            return False
        if self.guard is not None and not self.guard():
            return False
        return owner(key, self._joining) == self.instance_id

    def owner(self, key: str) -> str | None:
        """The owner of `key` among the active instances."""
        try:
            return self._owners[key]
        except KeyError:
            pass
        if len(self._owners) >= _MAX_CACHED:
            self._owners.clear()
        found = self._owners[key] = owner(key, self._active)
        return found

    def owns(self, key: str) -> bool:
        """Whether this instance does the key's stateful work now."""
        if not self.clustered:
            return True
        if self.guard is not None and not self.guard():
            return False
        return self.instance_id in self._active and self.owner(key) == self.instance_id
