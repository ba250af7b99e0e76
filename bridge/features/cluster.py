"""The membership wired to the MQTT link (docs/scale-out.md): documents, wills, releases.

`bridge.core.membership` decides; this feature feeds it what the broker delivers, publishes this
instance's document (refreshing `owns` within a second of a change), clears a dead instance's
document and re-asserts `online` when its will arrives, and runs the moves: after each change of
the active set, the features release what this instance no longer owns (`Releaser.release`),
then the release is announced.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any, Protocol

from bridge import __version__
from bridge.core import jsontext
from bridge.core.envelope import Publisher, dumps, now_iso
from bridge.core.inbound import Inbound
from bridge.core.membership import ACTIVE, DOWN, Change, Membership, will_instance
from bridge.core.ownership import Ownership
from bridge.core.topics import Topics
from bridge.core.waits import until

log = logging.getLogger(__name__)
TICK = 0.2  # seconds between membership ticks (settle, freeze detection, `owns` refresh)
ONLINE = dumps({"state": "online"})


class Releaser(Protocol):
    """A feature holding per-key state: it lets go of what a change moved away."""

    async def release(self, change: Change) -> dict[str, Any] | None:
        """Finish and close what this instance no longer owns (not called when fenced); what
        the new owners need to know, for the release announcement."""


class ClusterFeature:
    """Membership of one instance."""

    name = "cluster"

    def __init__(
        self,
        *,
        ownership: Ownership,
        topics: Topics,
        publisher: Publisher,
        settle: float,
        keepalive: float,
        group: str,
        release_bound: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._topics = topics
        self._publisher = publisher
        self._group = group
        self._started_at = now_iso()
        self.me = ownership.instance_id
        # A loop that stood still this long was frozen (SIGSTOP, a VM pause): the broker may
        # have given its keys away meanwhile; well under the 1.5 x keepalive it waits.
        freeze_limit = max(1.0, 0.4 * keepalive)
        self.membership = Membership(
            ownership=ownership,
            settle=settle,
            freeze_limit=freeze_limit,
            clock=clock,
            publish_doc=self._publish_doc,
            clear_doc=self._clear_doc,
            release_bound=release_bound,
        )
        ownership.guard = self.membership.fresh
        self.membership.listeners.append(self._changed)
        self._state = DOWN
        self._owns = 0
        self.counters: list[Callable[[], int]] = []  # each feature's count of owned keys
        self.releasers: list[Releaser] = []
        self._changes: asyncio.Queue[Change] = asyncio.Queue()
        self._idle = asyncio.Event()
        self._idle.set()
        self.releases = 0

    # -- link hooks -----------------------------------------------------------------------------
    def connected(self) -> None:
        """The link is up (again): join."""
        self.membership.connected()

    def disconnected(self) -> None:
        """The link is lost: fence."""
        self.membership.disconnected()

    # -- Hooks ----------------------------------------------------------------------------------
    def subscriptions(self) -> list[str]:
        """Membership documents, release announcements and `bridge/state` (the wills)."""
        return [self._topics.instances, self._topics.releases, self._topics.state]

    def handles(self, msg: Inbound) -> bool:
        """Take a membership message, in arrival order with the requests."""
        topics = self._topics
        if msg.topic == topics.state:
            self._state_message(msg.payload)
            return True
        instance = topics.instance_of(msg.topic)
        if instance is not None:
            self.membership.on_doc(instance, msg.payload)
            return True
        releaser = topics.releaser_of(msg.topic)
        if releaser is not None:
            self.membership.on_release(releaser, _release_body(msg.payload))
            return True
        return False

    def membership_message(self, msg: Inbound) -> bool:
        """Whether `msg` is a document, a will or a release: every instance applies those in
        the same order as the requests, and so must an overloaded one."""
        topics = self._topics
        return (
            msg.topic == topics.state
            or topics.instance_of(msg.topic) is not None
            or topics.releaser_of(msg.topic) is not None
        )

    def _state_message(self, payload: bytes) -> None:
        dead = will_instance(payload)
        if dead is not None and self.membership.on_will(dead):
            log.warning("cluster: instance %s lost its connection; taking over its keys", dead)
            self._publisher.clear_retained(self._topics.instance(dead))
            self._publisher.set_retained(self._topics.state, ONLINE)

    # -- documents ------------------------------------------------------------------------------
    def _publish_doc(self, state: str) -> None:
        if state == ACTIVE and self._state != ACTIVE:
            # Active now: `bridge/state` may say offline (the last active one left while this
            # one was joining), and it reads offline only when no instance is left.
            self._publisher.set_retained(self._topics.state, ONLINE)
        self._state = state
        self._owns = self.owned()
        body = self.membership.doc(
            state, version=__version__, started_at=self._started_at, owns=self._owns
        )
        self._publisher.set_retained(self._topics.instance(self.me), dumps(body))

    def _clear_doc(self, instance: str) -> None:
        self._publisher.clear_retained(self._topics.instance(instance))

    def owned(self) -> int:
        """Keys this instance owns now, summed over the features."""
        total = 0
        for count in self.counters:
            try:
                total += count()
            except Exception:
                log.exception("cluster: counting owned keys failed")
        return total

    # -- moves ----------------------------------------------------------------------------------
    def _changed(self, change: Change) -> None:
        if change.fenced:
            return  # the features dropped everything themselves; nothing to announce
        if self.me in change.before:
            self._idle.clear()
            self._changes.put_nowait(change)

    async def _mover(self) -> None:
        while True:
            if self._changes.empty():
                self._idle.set()
            change = await self._changes.get()
            handoff: dict[str, Any] = {}
            for releaser in self.releasers:
                try:
                    handoff.update(await releaser.release(change) or {})
                except Exception:
                    log.exception("cluster: releasing moved keys failed")
            if self.membership.state != DOWN:
                body = {
                    "instance": self.me,
                    "active": sorted(change.after),
                    "at": now_iso(),
                    **handoff,
                }
                self._publisher.publish(self._topics.release(self.me), dumps(body))
                self.releases += 1

    # -- lifecycle ------------------------------------------------------------------------------
    async def run(self) -> None:
        """Tick: settle, freeze detection, `owns` refresh; and run the moves."""
        mover = asyncio.create_task(self._mover(), name="cluster-moves")
        try:
            while True:
                await asyncio.sleep(TICK)
                self.membership.tick()
                state = self.membership.state
                if state != DOWN and self.owned() != self._owns and state == self._state:
                    self._publish_doc(state)
        finally:
            mover.cancel()

    async def leave(self, grace: float) -> None:
        """Graceful stop, first part: `leaving`, then wait (bounded) until the others see it
        and this instance has released what it held."""
        self.membership.leave()
        deadline = time.monotonic() + grace
        await until(lambda: self.me not in self._own_active(), grace)
        await asyncio.sleep(0)
        remaining = max(0.1, deadline - time.monotonic())
        try:
            await asyncio.wait_for(self._idle.wait(), remaining)
        except TimeoutError:
            log.warning("cluster: moves not finished before shutdown")

    def _own_active(self) -> frozenset[str]:
        return self.membership.active

    def finish(self) -> bool:
        """Graceful stop, last part: clear this instance's document; whether `offline` should
        be published (no other instance is active)."""
        self._publisher.clear_retained(self._topics.instance(self.me))
        return not self.membership.others_active()

    async def aclose(self) -> None:
        """Nothing to release beyond `leave` and `finish`."""

    def status(self) -> dict[str, Any]:
        """The `cluster` part of bridge/health: this instance and the live set."""
        return {
            "instance_id": self.me,
            "group": self._group,
            "state": self.membership.state,
            "owns": self._owns,
            "live": self.membership.live(),
            "active": sorted(self._own_active()),
            "fences": self.membership.fences,
            "releases": self.releases,
        }


def _release_body(payload: bytes) -> dict[str, Any]:
    """A release announcement as a dict ({} when it is not one: the release still counts)."""
    return jsontext.object_of(payload) or {}
