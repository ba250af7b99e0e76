"""Rendezvous ownership of keys (docs/scale-out.md): the rule an operator can compute."""

from __future__ import annotations

import hashlib
from collections import Counter

from bridge.core.ownership import POLL_KEY, Ownership, owner, weight

SESSIONS = [f"session-{i}" for i in range(3000)]


def test_a_lone_instance_owns_everything() -> None:
    assert all(Ownership("a").owns(sid) for sid in SESSIONS)


def test_the_weight_is_sha256_of_instance_slash_key_big_endian() -> None:
    digest = hashlib.sha256(b"bridge-1/sess-9").digest()
    assert weight("bridge-1", "sess-9") == int.from_bytes(digest, "big")
    # Computed by hand, the way docs/scale-out.md tells an operator to.
    by_hand = max(
        ["x", "y", "z"], key=lambda i: hashlib.sha256(f"{i}/{POLL_KEY}".encode()).digest()
    )
    assert owner(POLL_KEY, ["x", "y", "z"]) == by_hand


def test_every_session_has_exactly_one_owner_and_the_load_is_spread() -> None:
    instances = ["a", "b", "c"]
    views = {i: Ownership(i, clustered=True) for i in instances}
    for view in views.values():
        view.set_active(instances)
    for sid in SESSIONS:
        assert sum(view.owns(sid) for view in views.values()) == 1
    shares = Counter(owner(sid, instances) for sid in SESSIONS)
    assert all(800 < shares[i] < 1200 for i in instances)


def test_only_the_sessions_of_a_departed_instance_move() -> None:
    before = {sid: owner(sid, ["a", "b", "c"]) for sid in SESSIONS}
    after = {sid: owner(sid, ["a", "b"]) for sid in SESSIONS}
    moved = [sid for sid in SESSIONS if before[sid] != after[sid]]
    assert moved and all(before[sid] == "c" for sid in moved)


def test_a_clustered_instance_that_is_not_active_owns_nothing() -> None:
    view = Ownership("a", clustered=True)
    assert not any(view.owns(sid) for sid in SESSIONS[:50])  # joining: nothing yet
    view.set_active(["b", "c"])
    assert not any(view.owns(sid) for sid in SESSIONS[:50])
    assert owner("k", []) is None


def test_a_change_of_the_active_set_is_seen_at_once_despite_the_cache() -> None:
    view = Ownership("a", clustered=True)
    view.set_active(["a"])
    assert all(view.owns(sid) for sid in SESSIONS[:100])
    view.set_active(["a", "b", "c"])
    assert [view.owns(sid) for sid in SESSIONS[:100]] == [
        owner(sid, ["a", "b", "c"]) == "a" for sid in SESSIONS[:100]
    ]


def test_the_key_of_a_request() -> None:
    from bridge.core.ownership import request_key
    from bridge.core.topics import Topics

    t = Topics("b")

    def key(topic: str, payload: bytes) -> str:
        route = t.parse(topic)
        assert route is not None
        return request_key(route, payload, max_payload=1000)

    assert key("b/ivh/s1/text", b"hello") == "s1"
    assert key("b/bridge/request/ivh/get_session", b'{"session_id": "s2"}') == "s2"
    assert key("b/bridge/request/ivh/list_sessions", b"{}") == "ivh/list_sessions"
    assert key("b/bridge/request/ivh/get_session", b"{not json") == "ivh/get_session"
    assert key("b/bridge/request/ivh/get_session", b'{"session_id": "a/b"}') == "ivh/get_session"
    assert key("b/ivh/bad%20id/text", b"x") == "ivh/send_text"  # a bad route: its action
    assert key("b/bridge/request/x", b"{}") == "bridge/request"
    big = b'{"session_id": "s3", "pad": "' + b"x" * 2000 + b'"}'
    assert key("b/bridge/request/ivh/get_session", big) == "ivh/get_session"  # too large
