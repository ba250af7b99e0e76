"""The de-duplication window (docs/reliability.md) as a unit: answers, waiters, expiry, and its
footprint."""

from __future__ import annotations

import gc
from typing import Any

from bridge.core.dedup import Deduplicator
from bridge.core.requests import RequestContext


def _ctx(tx: int, payload: bytes = b"{}") -> RequestContext:
    return RequestContext(
        action="desk/get_session_state",
        topic="t",
        reply_topic="r",
        correlation_data=None,
        started=0.0,
        transaction=tx,
        fingerprint=payload + b"%d" % tx,
    )


def test_a_duplicate_gets_the_first_answer_now_or_when_it_comes() -> None:
    dedup = Deduplicator(60)
    replies: list[tuple[Any, dict[str, Any] | None]] = []

    def reply(ctx: RequestContext, envelope: dict[str, Any] | None) -> None:
        replies.append((ctx.transaction, envelope))

    assert not dedup.seen(_ctx(1), {})
    assert dedup.seen(_ctx(1), {})
    dedup.follow(_ctx(1), reply)  # waits: the first has no answer yet
    assert replies == []
    dedup.finish(_ctx(1), b'{"status":"ok","transaction":1}')
    dedup.follow(_ctx(1), reply)  # answered at once now
    duplicate = {"status": "ok", "transaction": 1, "duplicate": True}
    assert replies == [(1, duplicate), (1, duplicate)]


def test_a_request_answered_with_nothing_answers_its_duplicates_with_nothing() -> None:
    dedup = Deduplicator(60)
    replies: list[dict[str, Any] | None] = []
    dedup.seen(_ctx(7), {})
    dedup.follow(_ctx(7), lambda _, envelope: replies.append(envelope))
    dedup.finish(_ctx(7), None)
    assert replies == [None]


def test_the_window_ends() -> None:
    dedup = Deduplicator(0.0001)
    dedup.seen(_ctx(1), {})
    while dedup.seen(_ctx(2), {}) or dedup.seen(_ctx(1), {}):  # both new once the first expires
        pass
    assert not Deduplicator(0).seen(_ctx(1), {})  # a window of 0: nothing is remembered


def test_what_it_remembers_is_nothing_the_collector_tracks() -> None:
    """An object per remembered request made every young collection walk 20,000 of them."""
    dedup = Deduplicator(60)
    contexts = [_ctx(tx) for tx in range(2000)]
    gc.collect()
    before = len(gc.get_objects())
    for ctx in contexts:
        dedup.seen(ctx, {})
        dedup.finish(ctx, b'{"status":"ok"}')
    gc.collect()
    assert len(gc.get_objects()) - before < 50
