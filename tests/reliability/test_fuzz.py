"""Property-based fuzz (docs/topics.md, docs/reliability.md): thousands of random invalid requests
on random topics,
published through a real broker to a running bridge. Every one gets exactly one error answer,
none reaches the API, and the bridge still answers afterwards.

Hypothesis draws the cases (derandomized, so CI runs the same ones every time); they are then
published in one go, which keeps the run to seconds instead of a bridge per example."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from bridge.features.desk.feature import VERIFY_SESSION
from tests.reliability.conftest import until
from tests.support import figures
from tests.support.mqtt_probe import response_properties
from tests.support.world import World

CASES = 3000
BATCH = 25
ACTIONS = [
    "bridge/health_check",
    "desk/get_session_state",
    "desk/send_stream",
    "desk/unwatch",
    "desk/watch",
    "ivh/close_session",
    "ivh/create_session",
    "ivh/get_session",
    "ivh/interrupt",
    "ivh/list_sessions",
    "ivh/send_command",
    "ivh/send_text",
    "ivh/start_session",
    "ivh/stream_text",
]
LEAVES = {
    "ivh": ["close", "get", "text", "stream", "interrupt", "command"],
    "desk": ["stream", "get", "watch"],
}
TEXT_LEAVES = {("desk", "stream"), ("ivh", "text"), ("ivh", "stream")}  # plain text is valid
STABLE_CODES = {
    "invalid_json",
    "invalid_payload",
    "invalid_session_id",
    "unknown_action",
    "payload_too_large",
    "expired",
}


@dataclass(frozen=True)
class Case:
    """One fuzzed message: a topic under the base and a payload that is invalid for it."""

    topic: str
    payload: bytes
    expiry: int | None


# Topic levels: anything a client may publish (no wildcards, separators, NUL or the control and
# non-characters mosquitto refuses).
LEVEL = st.text(
    st.characters(categories=("L", "N", "P", "S", "Zs"), exclude_characters="+#/\x00\ufffe"),
    max_size=12,
)
SIDS = st.one_of(st.sampled_from(["s1", "sess-1", "a.b:c@d_e-f", "X" * 128]), LEVEL)
SCALAR = st.none() | st.booleans() | st.integers() | st.text(max_size=20) | SIDS
JSONISH = SCALAR | st.lists(SCALAR, max_size=3) | st.fixed_dictionaries({"k": SCALAR})


def _dump(value: Any) -> bytes:
    return json.dumps(value).encode()


def _is_json(text: str) -> bool:
    try:
        json.loads(text)
    except ValueError:
        return False
    return True


bad_utf8 = st.builds(lambda a, b: a + b"\xff" + b, st.binary(max_size=30), st.binary(max_size=30))
broken_json = (
    st.text(max_size=40).map(lambda t: "{" + t).filter(lambda t: not _is_json(t)).map(str.encode)
)
unknown_field = st.builds(
    lambda extra, value: _dump({**extra, "zz_fuzz_unknown": value}),
    st.fixed_dictionaries({}, optional=dict.fromkeys(("session_id", "text", "chunk"), JSONISH)),
    JSONISH,
)
expired = st.builds(
    lambda extra, when: _dump({**extra, "expires_at": when}),
    st.fixed_dictionaries({}, optional=dict.fromkeys(("session_id", "text", "chunk"), JSONISH)),
    st.sampled_from([0, 1, 1_000_000_000, "2000-01-01T00:00:00Z", "1999-12-31T23:59:59+00:00"]),
)
non_finite = st.builds(
    lambda key, number: b'{"%s": %s}' % (key.encode(), number.encode()),
    st.sampled_from(["transaction", "text", "chunk", "interval", "session_id"]),
    st.sampled_from(["NaN", "Infinity", "-Infinity", "1e400", "[NaN]"]),
)
not_an_object = (SCALAR | st.lists(SCALAR, max_size=3)).map(_dump)
oversized = st.integers(65 * 1024, 80 * 1024).map(lambda n: b'{"pad":"' + b"p" * n + b'"}')

# oversize is one case in ~40: each is 65-80 KB through the broker, twice
ANY_PAYLOAD = st.integers(0, 39).flatmap(
    lambda k: (
        oversized
        if k == 0
        else st.one_of(bad_utf8, broken_json, unknown_field, expired, non_finite)
    )
)
REQUEST_PAYLOAD = st.one_of(ANY_PAYLOAD, not_an_object)
# On text and stream topics anything but a JSON object is the text itself, broken JSON too
TEXT_PAYLOAD = st.integers(0, 39).flatmap(
    lambda k: oversized if k == 0 else st.one_of(bad_utf8, unknown_field, expired, non_finite)
)

request_topic = st.builds(
    lambda s, a: f"bridge/request/{s}/{a}",
    st.sampled_from(["ivh", "desk", "bridge"]) | LEVEL,
    st.sampled_from([a.split("/")[1] for a in ACTIONS]) | LEVEL,
)
deep_topic = st.lists(LEVEL, max_size=5).map(lambda parts: "bridge/request/" + "/".join(parts))


@st.composite
def cases(draw: st.DrawFn) -> Case:
    kind = draw(st.sampled_from(["request", "deep", "shorthand"]))
    expiry = draw(st.none() | st.integers(60, 3600))
    if kind == "shorthand":
        service = draw(st.sampled_from(["ivh", "desk"]))
        leaf = draw(st.sampled_from(LEAVES[service]))
        topic = f"{service}/{draw(SIDS)}/{leaf}"
        strategy = TEXT_PAYLOAD if (service, leaf) in TEXT_LEAVES else REQUEST_PAYLOAD
        return Case(topic, draw(strategy), expiry)
    topic = draw(request_topic if kind == "request" else deep_topic)
    return Case(topic, draw(REQUEST_PAYLOAD), expiry)


@pytest.fixture(scope="module")
def fuzz_cases() -> list[Case]:
    """CASES cases, the same on every run (drawn BATCH at a time: far less per-example work)."""
    drawn: list[Case] = []

    @settings(
        max_examples=CASES // BATCH,
        derandomize=True,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.lists(cases(), min_size=BATCH, max_size=BATCH))
    def collect(batch: list[Case]) -> None:
        drawn.extend(batch)

    collect()
    return drawn


async def test_fuzz_thousands_of_invalid_requests(fuzz_cases: list[Case], world: World) -> None:
    w = world
    base = w.probe.base
    before = await _api_calls(w)
    sends = [_send(w, i, case) for i, case in enumerate(fuzz_cases)]
    for start in range(0, len(sends), 100):  # pipelined: 100 PUBACKs outstanding at a time
        await asyncio.gather(*sends[start : start + 100])
    n = len(fuzz_cases)
    figures.add("fuzz_cases", n)
    await until(lambda: _answered(w) >= n, 60, f"{n} answers")
    await asyncio.sleep(0.3)  # a second answer to any case would arrive now
    answers = _answers(w)
    reply = await w.probe.request("bridge/health_check")
    calls = await _api_calls(w)
    figures.add("fuzz_api_calls", len(calls) - len(before))
    assert len(answers) == n, f"{len(answers)} answers to {n} messages"
    replies = [a for a in answers if "status" in a]
    assert all(a["status"] == "error" for a in replies)
    assert {a["error"]["code"] for a in replies} <= STABLE_CODES
    per_case = [m.topic for m in w.probe.messages if m.topic.startswith(f"{base}/fuzz/")]
    assert len(per_case) == len(set(per_case)), "a case was answered twice"
    assert reply["status"] == "ok"
    assert calls == before, "an invalid request reached the API"


async def _send(w: World, i: int, case: Case) -> None:
    props = response_properties(f"{w.probe.base}/fuzz/{i}", str(i).encode())
    if case.expiry is not None:
        props.MessageExpiryInterval = case.expiry
    await w.probe.publish(case.topic, case.payload, properties=props)


def _answered(w: World) -> int:
    """A cheap count of the answers so far (topics only, no parsing)."""
    fuzz, event = f"{w.probe.base}/fuzz/", f"{w.probe.base}/bridge/event"
    return sum(1 for m in w.probe.messages if m.topic.startswith(fuzz) or m.topic == event)


def _answers(w: World) -> list[dict[str, Any]]:
    base = w.probe.base
    replies = [m.json() for m in w.probe.messages if m.topic.startswith(f"{base}/fuzz/")]
    events = [m.json() for m in w.probe.messages if m.topic == f"{base}/bridge/event"]
    return replies + [e for e in events if e.get("type") == "request_error"]


async def _api_calls(w: World) -> list[dict[str, Any]]:
    return [
        e
        for e in await w.admin.journal("")
        if e.get("kind") == "http"
        and "listsessionofuin" not in str(e.get("path"))
        and e.get("session_id") != VERIFY_SESSION  # the bridge's own credentials check
    ]
