"""Rendezvous ownership of sessions (SPEC 7)."""

from __future__ import annotations

from collections import Counter

from bridge.core.ownership import Ownership, owner

SESSIONS = [f"session-{i}" for i in range(3000)]


def test_a_lone_instance_owns_everything() -> None:
    assert all(Ownership("a").owns(sid) for sid in SESSIONS)


def test_every_session_has_exactly_one_owner_and_the_load_is_spread() -> None:
    instances = ["a", "b", "c"]
    views = {i: Ownership(i) for i in instances}
    for view in views.values():
        view.set_live(instances)
    for sid in SESSIONS:
        assert sum(view.owns(sid) for view in views.values()) == 1
    shares = Counter(owner(sid, instances) for sid in SESSIONS)
    assert all(800 < shares[i] < 1200 for i in instances)


def test_only_the_sessions_of_a_departed_instance_move() -> None:
    before = {sid: owner(sid, ["a", "b", "c"]) for sid in SESSIONS}
    after = {sid: owner(sid, ["a", "b"]) for sid in SESSIONS}
    moved = [sid for sid in SESSIONS if before[sid] != after[sid]]
    assert moved and all(before[sid] == "c" for sid in moved)
