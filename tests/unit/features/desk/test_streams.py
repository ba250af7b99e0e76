"""SessionStream: order, coalescing within the 12 KB body limit, finish, failures
(docs/design.md)."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest

from bridge.errors import BridgeError, UpstreamError
from bridge.features.desk.streams import SessionStream
from bridge.tencent.desk import MAX_BODY_BYTES, stream_body_size


@dataclass
class Upstream:
    """A send_stream_msg stand-in that records each call; `fail` makes calls fail."""

    latency: float = 0.005
    fail: set[int] = field(default_factory=set)
    calls: list[dict[str, Any]] = field(default_factory=list)

    async def __call__(
        self, *, session_id: str, chunk: str, msg_key: str | None = None, finish: bool = False
    ) -> str | None:
        index = len(self.calls)
        self.calls.append({"sid": session_id, "chunk": chunk, "key": msg_key, "finish": finish})
        await asyncio.sleep(self.latency)
        if index in self.fail:
            raise UpstreamError("boom", code="upstream_error", upstream_code=20005)
        return msg_key or f"key-{index}"


def make(upstream: Upstream, finished: list[dict[str, Any]]) -> SessionStream:
    return SessionStream(
        "s1",
        send=upstream,
        on_finished=lambda _sid, result: finished.append(result),
        max_queue=100_000,
    )


async def feed(stream: SessionStream, items: list[tuple[str, bool]], gap: float = 0.0) -> list[Any]:
    futures = []
    drains: list[asyncio.Task[None]] = []
    for text, finish in items:
        futures.append(stream.add(text, finish=finish))
        if not stream.running:
            stream.running = True
            drains.append(asyncio.create_task(stream.drain()))
        await asyncio.sleep(gap)
    results = await asyncio.gather(*futures, return_exceptions=True)
    await asyncio.gather(*drains)
    return results


async def test_chunks_arriving_during_a_call_are_joined_in_order() -> None:
    upstream, finished = Upstream(latency=0.01), list[dict[str, Any]]()
    chunks = [(f"<{i}>", False) for i in range(200)] + [("!", True)]
    results = await feed(make(upstream, finished), chunks, gap=0.0005)
    assert "".join(c["chunk"] for c in upstream.calls) == "".join(t for t, _ in chunks)
    assert len(upstream.calls) < 200 / 5
    assert [c["key"] for c in upstream.calls][1:] == ["key-0"] * (len(upstream.calls) - 1)
    assert upstream.calls[-1]["finish"] and not any(c["finish"] for c in upstream.calls[:-1])
    assert finished == [
        {"msg_key": "key-0", "chunks": 201, "calls": len(upstream.calls), "reason": "finish"}
    ]
    assert results[-1]["msg_key"] == "key-0" and results[:-1] == [None] * 200


async def test_no_call_exceeds_the_body_limit() -> None:
    upstream, finished = Upstream(latency=0.02), list[dict[str, Any]]()
    chunks = [("é" * 1000, False) for _ in range(60)] + [("", True)]
    await feed(make(upstream, finished), chunks)
    assert len(upstream.calls) > 1
    for call in upstream.calls:
        assert stream_body_size("s1", call["chunk"], "k" * 128, True) <= MAX_BODY_BYTES
    assert "".join(c["chunk"] for c in upstream.calls) == "é" * 60_000


async def test_finish_ends_the_message_and_the_next_chunk_starts_another() -> None:
    upstream, finished = Upstream(latency=0.01), list[dict[str, Any]]()
    await feed(make(upstream, finished), [("a", False), ("b", True), ("c", False), ("d", True)])
    texts = [(c["chunk"], c["key"], c["finish"]) for c in upstream.calls]
    assert "".join(t for t, _, _ in texts) == "abcd"
    assert len(finished) == 2 and finished[0]["msg_key"] != finished[1]["msg_key"]
    boundary = next(i for i, (_, _, fin) in enumerate(texts) if fin)
    assert texts[boundary][0].endswith("b") and texts[boundary + 1][1] is None


async def test_a_failed_call_fails_only_its_chunks_and_the_stream_goes_on() -> None:
    upstream, finished = Upstream(latency=0.0, fail={1}), list[dict[str, Any]]()
    stream = make(upstream, finished)
    results = await feed(stream, [("a", False), ("b", False), ("c", True)], gap=0.01)
    assert results[0] is None and results[2]["chunks"] == 2
    assert isinstance(results[1], BridgeError) and results[1].code == "upstream_error"
    assert [c["chunk"] for c in upstream.calls] == ["a", "b", "c"]


async def test_an_oversize_chunk_is_refused_before_queueing() -> None:
    stream = make(Upstream(), [])
    with pytest.raises(BridgeError) as info:
        stream.add("x" * MAX_BODY_BYTES, finish=False)
    assert info.value.code == "payload_too_large"
    assert stream.depth == 0


async def test_a_full_queue_is_rate_limited() -> None:
    stream = SessionStream("s1", send=Upstream(), on_finished=lambda *_: None, max_queue=2)
    stream.add("a", finish=False)
    stream.add("b", finish=False)
    with pytest.raises(BridgeError) as info:
        stream.add("c", finish=False)
    assert (info.value.code, info.value.retryable) == ("rate_limited", True)
