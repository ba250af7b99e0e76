"""Membership as pure logic on a fake clock (docs/scale-out.md): three instances fed the same
stream of documents agree on every owner; joining settles, leaving moves on the echo, a will or
a cleared document removes an instance, a freeze or a lost link fences."""

from __future__ import annotations

import asyncio
import json

import pytest

from bridge.core.membership import (
    ACTIVE,
    JOINING,
    LEAVING,
    Change,
    Handover,
    Membership,
    parse_doc,
    will_instance,
)
from bridge.core.ownership import Ownership, owner
from tests.support.clock import FakeClock


class Node:
    """One instance: its membership and what it published."""

    def __init__(self, name: str, clock: FakeClock, settle: float = 2.0) -> None:
        self.ownership = Ownership(name, clustered=True)
        self.published: list[str] = []
        self.cleared: list[str] = []
        self.changes: list[Change] = []
        self.m = Membership(
            ownership=self.ownership,
            settle=settle,
            freeze_limit=1.0,
            clock=clock,
            publish_doc=self.published.append,
            clear_doc=self.cleared.append,
        )
        self.m.listeners.append(self.changes.append)


def doc(state: str) -> bytes:
    return json.dumps({"state": state, "version": "x", "started_at": "t", "owns": 0}).encode()


def advance(clock: FakeClock, nodes: list[Node], seconds: float) -> None:
    """Let time pass with the ticks running (every 0.2 s), as the feature does."""
    end = clock.now + seconds
    while clock.now < end:
        clock.now = min(end, clock.now + 0.2)
        for node in nodes:
            node.m.tick()


def deliver(nodes: list[Node], instance: str, payload: bytes) -> None:
    for node in nodes:
        node.m.on_doc(instance, payload)


def test_joining_owns_nothing_until_settled_and_echoed() -> None:
    clock = FakeClock()
    a = Node("a", clock)
    a.m.connected()
    assert a.published == [JOINING]
    deliver([a], "a", doc(JOINING))
    assert not a.ownership.owns("s1")
    advance(clock, [a], 1.0)
    assert a.m.state == JOINING
    advance(clock, [a], 1.1)
    assert a.published[-1] == ACTIVE and a.m.state == ACTIVE
    deliver([a], "a", doc(ACTIVE))  # the echo: the others see it now too
    assert a.ownership.owns("s1")


def _cluster(clock: FakeClock, names: tuple[str, ...] = ("a", "b", "c")) -> list[Node]:
    nodes = [Node(n, clock) for n in names]
    for node in nodes:
        node.m.connected()
    advance(clock, nodes, 2.1)
    for node in nodes:
        deliver(nodes, node.m.me, doc(ACTIVE))
    return nodes


def test_the_same_stream_gives_every_instance_the_same_owner() -> None:
    clock = FakeClock()
    nodes = _cluster(clock)
    keys = [f"s{i}" for i in range(300)]
    for key in keys:
        assert sum(n.ownership.owns(key) for n in nodes) == 1
    counts = [sum(n.ownership.owns(k) for k in keys) for n in nodes]
    assert all(counts), counts  # spread over all three


def test_leaving_moves_keys_on_the_echo_not_before() -> None:
    clock = FakeClock()
    a, b, c = nodes = _cluster(clock)
    mine = [k for k in (f"s{i}" for i in range(100)) if a.ownership.owns(k)]
    a.m.leave()
    assert a.published[-1] == LEAVING
    assert all(a.ownership.owns(k) for k in mine)  # the others still see it active
    deliver(nodes, "a", doc(LEAVING))
    assert not any(a.ownership.owns(k) for k in mine)
    assert all(b.ownership.owns(k) or c.ownership.owns(k) for k in mine)
    assert b.m.others_active()  # c is active


def test_a_will_removes_the_instance_and_only_its_keys_move() -> None:
    clock = FakeClock()
    a, b, _c = _cluster(clock)
    keys = [f"s{i}" for i in range(200)]
    before = {k: owner(k, {"a", "b", "c"}) for k in keys}
    assert b.m.on_will("c") and a.m.on_will("c")  # survivors clear c's document
    for k in keys:
        now = owner(k, a.ownership.active)
        assert now == owner(k, b.ownership.active)
        if before[k] != "c":
            assert now == before[k]
    assert "c" not in a.m.live()


def test_a_new_owner_waits_for_the_release_or_settle() -> None:
    clock = FakeClock()
    a, b = _cluster(clock, ("a", "b"))
    key = next(k for k in (f"s{i}" for i in range(100)) if a.ownership.owns(k))
    deliver([a, b], "a", doc(LEAVING))
    assert b.ownership.owns(key)
    assert b.m.handover.waits_for(key) == "a"
    b.m.on_release("a")
    assert b.m.handover.waits_for(key) is None


def test_a_new_owner_does_not_wait_for_a_dead_one() -> None:
    clock = FakeClock()
    a, b = _cluster(clock, ("a", "b"))
    key = next(k for k in (f"s{i}" for i in range(100)) if a.ownership.owns(k))
    b.m.on_will("a")
    assert b.ownership.owns(key) and b.m.handover.waits_for(key) is None


def test_the_gate_opens_after_its_wait_at_most() -> None:
    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        handover = Handover(me="b", settle=0.05, clock=loop.time)
        key = next(k for k in (f"s{i}" for i in range(100)) if owner(k, {"a", "b"}) == "a")
        handover.changed(frozenset({"a", "b"}), {"a", "b"})  # a leaves, still live
        async with asyncio.timeout(1):
            await handover.gate(key)

    asyncio.run(scenario())


def test_a_live_previous_owner_is_waited_for_as_long_as_its_release_can_take() -> None:
    clock = FakeClock()
    handover = Handover(me="b", settle=2.0, clock=clock, bound=15.0)
    key = next(k for k in (f"s{i}" for i in range(100)) if owner(k, {"a", "b"}) == "a")
    handover.changed(frozenset({"a", "b"}), {"a", "b"})
    clock.now += 14.9  # its queued drives are still going out, paced
    assert handover.waits_for(key) == "a"
    clock.now += 0.1
    assert handover.waits_for(key) is None


def test_a_second_change_at_once_does_not_end_the_wait_of_the_first() -> None:
    """a leaves (its keys go to b and c); c leaves half a second later: a key that moved from
    a to b still waits for a's release (the second change's `before` names b its owner)."""
    clock = FakeClock()
    handover = Handover(me="b", settle=10.0, clock=clock)
    keys = [f"s{i}" for i in range(200)]
    moved = next(
        k for k in keys if owner(k, {"a", "b", "c"}) == "a" and owner(k, {"b", "c"}) == "b"
    )
    from_c = next(k for k in keys if owner(k, {"b", "c"}) == "c")
    handover.changed(frozenset({"a", "b", "c"}), {"a", "b", "c"})
    clock.now += 0.5
    handover.changed(frozenset({"b", "c"}), {"a", "b", "c"})
    assert handover.waits_for(moved) == "a" and handover.waits_for(from_c) == "c"
    handover.released("c")
    assert handover.waits_for(moved) == "a" and handover.waits_for(from_c) is None
    handover.released("a")
    assert handover.waits_for(moved) is None


def test_a_lost_link_fences_and_a_reconnect_joins_again() -> None:
    clock = FakeClock()
    a, _b = _cluster(clock, ("a", "b"))
    a.m.disconnected()
    assert a.changes[-1].fenced and a.ownership.active == frozenset()
    assert not any(a.ownership.owns(f"s{i}") for i in range(50))
    a.m.connected()
    assert a.m.state == JOINING
    deliver([a], "a", doc(ACTIVE))  # its old document, still retained
    deliver([a], "b", doc(ACTIVE))
    assert not any(a.ownership.owns(f"s{i}") for i in range(50))  # not before it settles


def test_a_frozen_process_fences_itself_before_acting() -> None:
    clock = FakeClock()
    a, _ = _cluster(clock, ("a", "b"))
    a.ownership.guard = a.m.fresh
    key = next(k for k in (f"s{i}" for i in range(100)) if a.ownership.owns(k))
    clock.now += 10  # SIGSTOP ... SIGCONT: no tick ran
    assert not a.ownership.owns(key)
    assert any(c.fenced for c in a.changes) and a.m.state == JOINING and a.m.fences == 1


def test_an_instance_whose_document_is_cleared_rejoins() -> None:
    clock = FakeClock()
    a, _b = _cluster(clock, ("a", "b"))
    a.m.on_doc("a", b"")  # a survivor saw a stale will of a and cleared its document
    assert a.m.state == JOINING and a.published[-1] == JOINING and a.m.fences == 1


def test_split_views_converge_on_the_stream() -> None:
    """b missed c's document for a while (it reconnected): it owns less, never more, than the
    others think; once the stream delivers the document the views agree."""
    clock = FakeClock()
    a, b, c = _cluster(clock)
    b.m.on_doc("c", b"")  # b's view lacks c (split)
    keys = [f"s{i}" for i in range(200)]
    doubled = [k for k in keys if a.ownership.owns(k) and b.ownership.owns(k)]
    assert not doubled  # a and b still agree about each other: rendezvous moves only c's
    b.m.on_doc("c", doc(ACTIVE))
    assert all(sum(n.ownership.owns(k) for n in (a, b, c)) == 1 for k in keys)


@pytest.mark.parametrize(
    ("payload", "state"),
    [(b"", None), (b"{", None), (b"[]", None), (b'{"state":"x"}', None), (doc(ACTIVE), ACTIVE)],
)
def test_parse_doc(payload: bytes, state: str | None) -> None:
    assert parse_doc(payload) == state


def test_will_instance() -> None:
    will = b'{"state":"offline","reason":"connection_lost","instance":"b1"}'
    assert will_instance(will) == "b1"
    assert will_instance(b'{"state":"offline","reason":"shutdown","instance":"b1"}') is None
    assert will_instance(b'{"state":"online"}') is None
    assert will_instance(b"nonsense") is None


def test_while_nobody_is_active_one_joining_instance_answers_retry() -> None:
    clock = FakeClock()
    a, b = Node("a", clock), Node("b", clock)
    for node in (a, b):
        node.m.connected()
    deliver([a, b], "a", doc(JOINING))
    deliver([a, b], "b", doc(JOINING))
    keys = [f"s{i}" for i in range(50)]
    assert all(a.ownership.answers_unowned(k) != b.ownership.answers_unowned(k) for k in keys)
    assert not any(a.ownership.owns(k) or b.ownership.owns(k) for k in keys)
    advance(clock, [a, b], 2.1)
    deliver([a, b], "a", doc(ACTIVE))
    assert not any(n.ownership.answers_unowned(k) for n in (a, b) for k in keys)


def test_a_joiner_clears_the_documents_nobody_answers_for() -> None:
    """Every instance died at once: their `active` documents stay retained, and no will names
    them all. A new instance hears nothing from them while it settles, and clears them."""
    clock = FakeClock()
    new = Node("n", clock)
    for ghost in ("g1", "g2"):
        new.m.on_doc(ghost, doc(ACTIVE))  # retained, delivered on subscribe
    new.m.connected()
    new.m.on_doc("n", doc(JOINING))  # its own document is back
    advance(clock, [new], 2.1)
    assert new.m.state == ACTIVE and sorted(new.cleared) == ["g1", "g2"]
    assert new.m.live() == {"n": ACTIVE}
    new.m.on_doc("n", doc(ACTIVE))
    assert new.ownership.owns("any key") and new.m.active == frozenset({"n"})


def test_a_live_instance_answers_a_joiner_and_is_kept() -> None:
    clock = FakeClock()
    a, b, c = _cluster(clock)
    d = Node("d", clock)
    for node in (a, b, c):
        d.m.on_doc(node.m.me, doc(ACTIVE))  # retained
    d.m.connected()
    deliver([a, b, c, d], "d", doc(JOINING))
    assert [n.published[-1] for n in (a, b, c)] == [ACTIVE] * 3  # each answers once
    for node in (a, b):
        deliver([a, b, c, d], node.m.me, doc(ACTIVE))  # c is frozen: its answer never comes
    deliver([a, b, c, d], "d", doc(JOINING))  # the same joiner again: nobody answers twice
    assert [len(n.published) for n in (a, b, c)] == [3, 3, 3]
    advance(clock, [a, b, d], 2.1)
    assert d.cleared == ["c"] and d.m.state == ACTIVE
    assert a.cleared == b.cleared == []


def test_no_sweep_before_the_joiners_own_document_is_back() -> None:
    """A joiner that has not heard its own `joining` cannot tell who answered it."""
    clock = FakeClock()
    new = Node("n", clock)
    new.m.on_doc("g", doc(ACTIVE))
    new.m.connected()
    advance(clock, [new], 2.1)
    assert new.m.state == ACTIVE and new.cleared == []
    assert "g" in new.m.live()


def test_a_release_is_read_by_the_features_before_it_opens_the_gate() -> None:
    clock = FakeClock()
    _a, b, _c = _cluster(clock)
    bodies: list[dict[str, object]] = []

    def broken(body: dict[str, object]) -> None:
        raise RuntimeError("a listener that fails")

    b.m.release_listeners.extend([broken, bodies.append])
    b.m.on_release("a", {"ivh_replays": {"s": [["r", "TextOver", 0, None]]}})
    b.m.on_release("b", {"ignored": True})  # its own announcement
    b.m.on_release("a")
    assert bodies == [{"ivh_replays": {"s": [["r", "TextOver", 0, None]]}}, {}]
