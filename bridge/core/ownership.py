"""Which sessions this bridge instance owns (SPEC 7): one question, asked in one place.

A session's stateful work (its command channel, its desk stream, its state polling) belongs to
exactly one live instance, chosen by rendezvous (highest random weight) hashing of the session
id over the live instances: every instance computes the same owner without talking to the
others, and when an instance comes or goes only the sessions it owned move. Today a bridge is
the only instance it knows and owns every session; the scale-out plan feeds `set_live()` from
the retained `<base>/bridge/instances/<id>` topics (cleared by each instance's will).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable


def weight(instance_id: str, session_id: str) -> bytes:
    """The rendezvous weight of one (instance, session) pair: stable across processes."""
    return hashlib.blake2b(f"{instance_id}\0{session_id}".encode(), digest_size=8).digest()


def owner(session_id: str, instances: Iterable[str]) -> str:
    """The instance that owns `session_id` among `instances` (not empty)."""
    return max(instances, key=lambda instance: weight(instance, session_id))


class Ownership:
    """This instance's answer to "do I own this session?"."""

    def __init__(self, instance_id: str) -> None:
        self.instance_id = instance_id
        self._live = frozenset({instance_id})

    def set_live(self, instances: Iterable[str]) -> None:
        """The instances alive now (this one is always among them)."""
        self._live = frozenset({*instances, self.instance_id})

    def owns(self, session_id: str) -> bool:
        """Whether this instance does the session's stateful work."""
        return len(self._live) == 1 or owner(session_id, self._live) == self.instance_id
