"""Cluster membership on the broker (docs/scale-out.md), as pure logic on an injected clock.

Each instance keeps a retained document on `<base>/bridge/instances/<id>`; the live set is what
that topic tree holds, and the active set (the instances that own keys) is the live instances
whose document says `active`. Every instance applies the documents (and the wills on
`<base>/bridge/state` that name an instance) in the order the broker delivers them, interleaved
with the requests: on one broker that order is the same for every subscriber, so every instance
computes the same owner for every request without a word to the others.

The one exception is this instance's own entry: after a (re)connect its old document may still
be retained (`active`), but it owns nothing until it has settled again, so while it is joining
its own `active` document does not count; leaving counts from the echo of its `leaving`
document, the moment the others see it too.

Documents outlive their instances when no will clears them: a will is delivered only to those
connected when the broker publishes it, and only the last one stays retained (every instance
dead at once, a will that arrives before the subscriber has joined). So a joining instance asks
who is there: every live instance re-publishes its document when it sees another one start
joining, and at the end of its settle the joiner clears the documents it heard nothing from
since its own `joining` came back (the sweep).

Moves: when the active set changes, an instance that lost keys finishes and closes what it held
for them and then announces a release on `<base>/bridge/release/<id>`; the new owner of a key
waits for the release from the key's previous owner (while that one is still live), or for
`settle` seconds at most (`Handover`).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.core import jsontext
from bridge.core.ownership import Ownership, owner

log = logging.getLogger(__name__)

JOINING, ACTIVE, LEAVING = "joining", "active", "leaving"
DOWN = "down"  # not connected (or fenced): owns nothing, publishes nothing
STATES = frozenset({JOINING, ACTIVE, LEAVING})
Clock = Callable[[], float]


@dataclass(frozen=True, slots=True, kw_only=True)
class Change:
    """The active set moved from `before` to `after`; `fenced`: this instance lost its link
    (or woke up from a freeze) and must drop all session work without calling upstream."""

    before: frozenset[str]
    after: frozenset[str]
    fenced: bool = False

    def lost(self, me: str, key: str) -> bool:
        """Whether `me` owned `key` before this change and does not now."""
        return owner(key, self.before) == me and owner(key, self.after) != me

    def gained(self, me: str, key: str) -> bool:
        """Whether `me` owns `key` after this change and did not before."""
        return owner(key, self.after) == me and owner(key, self.before) != me


def parse_doc(payload: bytes) -> str | None:
    """The state of a membership document; None for an empty (cleared) or unreadable one."""
    doc = jsontext.object_of(payload)
    state = doc.get("state") if doc is not None else None
    return state if state in STATES else None


def will_instance(payload: bytes) -> str | None:
    """The instance an `offline`/`connection_lost` will on `bridge/state` names, else None."""
    doc = jsontext.object_of(payload)
    if doc is None or doc.get("state") != "offline":
        return None
    if doc.get("reason") != "connection_lost":
        return None
    instance = doc.get("instance")
    return instance if isinstance(instance, str) and instance else None


@dataclass(slots=True)
class _Move:
    """One change of the active set, as far as a new owner still waits on it."""

    before: frozenset[str]
    waiting: set[str]  # previous owners still live, not released yet
    until: float


class Handover:
    """When a new owner may start a key's stateful work after a move.

    Each change is kept until its wait is over, so a key that moved in one change still waits
    for its previous owner when another change follows at once (a rolling restart). A live
    previous owner is waited for as long as its release can take (`bound`: it lets the drives
    it had taken reach the socket first), never less than `settle`."""

    def __init__(self, *, me: str, settle: float, clock: Clock, bound: float = 0.0) -> None:
        self._me = me
        self._wait = max(settle, bound)
        self._clock = clock
        self._moves: list[_Move] = []
        self._released = asyncio.Event()

    def changed(self, before: frozenset[str], live: set[str]) -> None:
        """The active set changed from `before`; `live` is who still has a document."""
        now = self._clock()
        self._moves = [m for m in self._moves if m.waiting and now < m.until]
        waiting = {i for i in before if i != self._me and i in live}
        self._moves.append(_Move(before, waiting, now + self._wait))

    def released(self, instance: str) -> None:
        """`instance` announced its release (after the last change, in stream order)."""
        for move in self._moves:
            move.waiting.discard(instance)
        self._released.set()
        self._released = asyncio.Event()

    def gone(self, instance: str) -> None:
        """`instance` died: nothing to wait for from it."""
        self.released(instance)

    def waits_for(self, key: str) -> str | None:
        """The previous owner whose release the key still waits for, else None."""
        move = self._pending(key)
        return owner(key, move.before) if move is not None else None

    def _pending(self, key: str) -> _Move | None:
        now = self._clock()
        for move in self._moves:
            previous = owner(key, move.before)
            if previous != self._me and previous in move.waiting and now < move.until:
                return move
        return None

    async def gate(self, key: str) -> None:
        """Return once this instance may start `key`'s work (release seen, or the wait over)."""
        while (move := self._pending(key)) is not None:
            event = self._released
            remaining = move.until - self._clock()
            try:
                await asyncio.wait_for(event.wait(), max(0.0, remaining))
            except TimeoutError:
                return


class Membership:
    """This instance's membership: its state, the view of the others, the owner table."""

    def __init__(
        self,
        *,
        ownership: Ownership,
        settle: float,
        freeze_limit: float,
        clock: Clock,
        publish_doc: Callable[[str], None],
        clear_doc: Callable[[str], None] = lambda instance: None,
        release_bound: float = 0.0,
    ) -> None:
        self.me = ownership.instance_id
        self._ownership = ownership
        self._settle = settle
        self._freeze_limit = freeze_limit
        self._clock = clock
        self._publish_doc = publish_doc
        self._clear_doc = clear_doc
        # Others heard since this instance's `joining` came back; None: not back yet
        self._heard: set[str] | None = None
        self.handover = Handover(me=self.me, settle=settle, clock=clock, bound=release_bound)
        self.state = DOWN
        self._docs: dict[str, str] = {}  # instance -> state, as delivered
        self._settle_at = 0.0
        self._last_tick = clock()
        self.listeners: list[Callable[[Change], None]] = []
        # What a release announcement carries for the new owners (the features' handoffs)
        self.release_listeners: list[Callable[[dict[str, Any]], None]] = []
        self.fences = 0

    # -- this instance --------------------------------------------------------------------------
    def connected(self) -> None:
        """A (re)connect: join afresh; nothing is owned until `settle` has passed."""
        self._last_tick = self._clock()
        self._join()

    def _join(self) -> None:
        self.state = JOINING
        self._heard = None
        self._settle_at = self._clock() + self._settle
        self._publish_doc(JOINING)
        self._apply()

    def disconnected(self) -> None:
        """The link is gone: drop everything now (fencing)."""
        if self.state == DOWN:
            return
        self.state = DOWN
        self._docs.clear()
        self._apply(fenced=True)

    def tick(self) -> None:
        """Called often (every ~0.2 s): settle over -> active; a frozen loop -> fence."""
        now = self._clock()
        frozen = now - self._last_tick > self._freeze_limit
        self._last_tick = now
        if frozen and self.state in (JOINING, ACTIVE):
            self.fence("the process was frozen")
            return
        if self.state == JOINING and now >= self._settle_at:
            self._sweep()
            self.state = ACTIVE
            self._publish_doc(ACTIVE)
            self._apply()

    def _sweep(self) -> None:
        """Clear the documents of instances that said nothing while this one settled: each live
        instance answers a joiner with its document (`on_doc`), so these are gone."""
        if self._heard is None:
            return  # this instance's own document has not come back: nothing to judge by
        for instance in [i for i in self._docs if i != self.me and i not in self._heard]:
            log.warning("cluster: instance %s did not answer; clearing its document", instance)
            self._docs.pop(instance)
            self.handover.gone(instance)
            self._clear_doc(instance)

    def fresh(self) -> bool:
        """Whether the loop ran lately; a process that wakes from a freeze fences itself here,
        before it acts on anything it read while frozen (socket reads run before timers)."""
        if self.state == DOWN:
            return False
        if self._clock() - self._last_tick > self._freeze_limit:
            self.fence("the process was frozen")
            return False
        return True

    def fence(self, why: str) -> None:
        """Drop all session work at once and rejoin as joining (still connected)."""
        log.warning("cluster: %s: dropping all session work and rejoining", why)
        self.fences += 1
        self._last_tick = self._clock()
        self._apply_to(frozenset(), fenced=True)
        self._join()

    def leave(self) -> None:
        """Graceful stop: `leaving`; ownership moves when the echo of this document arrives."""
        if self.state in (JOINING, ACTIVE):
            self.state = LEAVING
            self._publish_doc(LEAVING)

    # -- what the broker delivers -----------------------------------------------------------------
    def on_doc(self, instance: str, payload: bytes) -> None:
        """A membership document (an empty payload: cleared)."""
        state = parse_doc(payload)
        mine = instance == self.me and self.state in (JOINING, ACTIVE)
        if mine and state is None and self._docs.get(instance) is not None:
            self._docs.pop(instance, None)  # cleared by a survivor: it saw a (stale) will
            self.fence("the others cleared this instance's document")
            return
        if instance == self.me:
            if state == JOINING and self.state == JOINING and self._heard is None:
                self._heard = set()  # this instance's `joining` is back: listen from here
        elif self._heard is not None:
            self._heard.add(instance)
        before = self._docs.get(instance)
        if state is None:
            self._docs.pop(instance, None)
            self.handover.gone(instance)
        else:
            self._docs[instance] = state
        if instance != self.me and state == JOINING and before != JOINING:
            self._answer_joiner()
        self._apply()

    def _answer_joiner(self) -> None:
        """Another instance started joining: tell it this one is live (see `_sweep`)."""
        if self.state in (JOINING, ACTIVE, LEAVING):
            self._publish_doc(self.state)

    def on_will(self, instance: str) -> bool:
        """A will naming `instance`; True when this instance should clear its document and
        re-publish `online` (a survivor's duty)."""
        if self.state == DOWN:
            return False
        if instance == self.me:  # the will of this instance's previous connection
            if self.state in (JOINING, ACTIVE) and self._docs.get(self.me) is not None:
                self.fence("the broker published this instance's will")
            return False
        self._docs.pop(instance, None)
        self.handover.gone(instance)
        self._apply()
        return True

    def on_release(self, instance: str, body: dict[str, Any] | None = None) -> None:
        """`instance` released what it no longer owns; `body` is its announcement, which the
        features read before any of them starts work on what it released."""
        if instance == self.me:
            return
        for listener in self.release_listeners:
            try:
                listener(body or {})
            except Exception:
                log.exception("cluster: a release listener failed")
        self.handover.released(instance)

    # -- views ------------------------------------------------------------------------------------
    def live(self) -> dict[str, str]:
        """Every instance with a document, and its state (this one as it is now)."""
        view = dict(self._docs)
        if self.state != DOWN:
            view[self.me] = self.state
        return dict(sorted(view.items()))

    @property
    def active(self) -> frozenset[str]:
        """The active set as applied to the owner table."""
        return self._ownership.active

    def others_active(self) -> bool:
        """Whether another instance is active now (a leaving one does not count)."""
        return any(s == ACTIVE for i, s in self._docs.items() if i != self.me)

    def _active(self) -> frozenset[str]:
        if self.state == DOWN:
            return frozenset()
        mine_counts = self.state in (ACTIVE, LEAVING)
        return frozenset(
            i for i, s in self._docs.items() if s == ACTIVE and (i != self.me or mine_counts)
        )

    def _joining(self) -> frozenset[str]:
        """Joining instances as delivered; this one only while it is joining (after the echo)."""
        return frozenset(
            i
            for i, s in self._docs.items()
            if s == JOINING and (i != self.me or self.state == JOINING)
        )

    def _apply(self, *, fenced: bool = False) -> None:
        self._apply_to(self._active(), fenced=fenced)

    def _apply_to(self, after: frozenset[str], *, fenced: bool) -> None:
        before = self._ownership.active
        joining = self._joining() if not fenced else frozenset()
        self._ownership.set_active(after, joining=joining)
        if after == before and not fenced:
            return
        self.handover.changed(before, set(self._docs))
        change = Change(before=before, after=after, fenced=fenced)
        for listener in self.listeners:
            try:
                listener(change)
            except Exception:
                log.exception("cluster: a membership listener failed")

    def doc(self, state: str, *, version: str, started_at: str, owns: int) -> dict[str, Any]:
        """The membership document body."""
        return {"state": state, "version": version, "started_at": started_at, "owns": owns}
