"""Contact Center over MQTT, end to end: real mosquitto, the emulator over sockets, the bridge."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator

import pytest

from tests.support.broker import Broker
from tests.support.mqtt_probe import Probe
from tests.support.world import World, world_of


@pytest.fixture
async def world(broker: Broker, base: str) -> AsyncIterator[World]:
    async with world_of(broker, base, ivh={"enabled": False}) as w:
        yield w


async def test_500_chunks_coalesce_into_one_ordered_message(world: World) -> None:
    w = world
    sid = await w.admin.desk_session(state="chatbot")
    # a real upstream round trip: chunks published meanwhile must be joined into the next call
    await w.admin.fault("send_stream_msg", 1000, latency_ms=20)
    chunks = [f"<{i}:" + "x" * (i % 7) + ">" for i in range(500)]
    for chunk in chunks:
        await w.probe.publish(f"desk/{sid}/stream", chunk.encode())
    await w.probe.publish(f"desk/{sid}/stream", {"chunk": "!", "finish": True})
    done = await w.probe.wait_json("bridge/response/desk/send_stream", timeout=20)
    assert done["status"] == "ok", done
    finished = await w.probe.wait_json(
        f"desk/{sid}/event", lambda e: e["type"] == "stream_finished"
    )
    messages = await w.admin.messages(sid)
    assert len(messages) == 1
    msg = messages[0]
    assert msg["text"] == "".join(chunks) + "!"
    assert msg["finished"] is True
    assert msg["calls"] < len(chunks)
    assert finished["data"]["chunks"] == 501 and finished["data"]["calls"] == msg["calls"]
    assert finished["data"]["msg_key"] == msg["msg_key"] == done["data"]["msg_key"]
    # only the finish (and no chunk) was answered
    assert len(w.probe.on("bridge/response/desk/send_stream")) == 1


async def test_next_chunk_after_finish_starts_a_new_message(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    for body in ({"chunk": "a", "finish": True}, {"chunk": "b", "finish": True}):
        reply = await w.probe.request("desk/send_stream", {"session_id": sid, **body})
        assert reply["status"] == "ok"
    messages = await w.admin.messages(sid)
    assert [m["text"] for m in messages] == ["a", "b"]
    assert messages[0]["msg_key"] != messages[1]["msg_key"]


async def test_two_sessions_stream_at_once_without_mixing(world: World) -> None:
    w = world
    a, b = await w.admin.desk_session(), await w.admin.desk_session()
    for i in range(100):
        await w.probe.publish(f"desk/{a}/stream", f"a{i},".encode())
        await w.probe.publish(f"desk/{b}/stream", f"b{i},".encode())
    for sid in (a, b):
        await w.probe.publish(f"desk/{sid}/stream", {"chunk": "", "finish": True})
    for _ in range(2):
        await w.probe.wait_json(
            "bridge/response/desk/send_stream",
            timeout=20,
            check=lambda r: len(w.probe.on("bridge/response/desk/send_stream")) == 2,
        )
    for sid, prefix in ((a, "a"), (b, "b")):
        (msg,) = await w.admin.messages(sid)
        assert msg["text"] == "".join(f"{prefix}{i}," for i in range(100))


async def test_oversize_chunk_is_refused(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    reply = await w.probe.request("desk/send_stream", {"session_id": sid, "chunk": "x" * 13 * 1024})
    assert reply["error"]["code"] == "payload_too_large"
    assert await w.admin.messages(sid) == []


async def test_failed_call_fails_its_chunks_and_the_stream_goes_on(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    await w.admin.fault("send_stream_msg", 1, error_code=141004)
    bad = await w.probe.request("desk/send_stream", {"session_id": sid, "chunk": "lost "})
    assert bad["error"]["code"] == "invalid_payload" and bad["error"]["upstream_code"] == 141004
    ok = await w.probe.request(
        "desk/send_stream", {"session_id": sid, "chunk": "kept", "finish": True}
    )
    assert ok["status"] == "ok"
    (msg,) = await w.admin.messages(sid)
    assert msg["text"] == "kept"


async def test_a_finish_that_timed_out_ends_the_message_here_too(broker: Broker, base: str) -> None:
    """The finish was applied but answered too late: the next chunk must start a new message,
    not carry the MsgKey of one that has ended (which the cloud refuses, for every chunk)."""
    desk = {"request_timeout": 0.3}
    async with world_of(broker, base, ivh={"enabled": False}, desk=desk) as w:
        sid = await w.admin.desk_session()
        first = await w.probe.request("desk/send_stream", {"session_id": sid, "chunk": "a"})
        assert first["status"] == "ok", first
        await w.admin.fault("send_stream_msg", 1, latency_ms=800)
        late = await w.probe.request("desk/send_stream", {"session_id": sid, "finish": True})
        assert late["error"]["code"] == "timeout", late
        await asyncio.sleep(0.7)  # the emulator has applied it by now
        again = await w.probe.request(
            "desk/send_stream", {"session_id": sid, "chunk": "b", "finish": True}
        )
        assert again["status"] == "ok", again
        messages = await w.admin.messages(sid)
        assert [(m["text"], m["finished"]) for m in messages] == [("a", True), ("b", True)]


async def test_a_finish_cut_off_unanswered_ends_the_message_here_too(world: World) -> None:
    """The connection drops after the finish was sent: it may have been applied, so the
    message is given up here as after a timeout."""
    w = world
    sid = await w.admin.desk_session()
    await w.probe.request("desk/send_stream", {"session_id": sid, "chunk": "a"})
    await w.admin.fault("send_stream_msg", 1, drop=True)
    cut = await w.probe.request("desk/send_stream", {"session_id": sid, "finish": True})
    assert cut["status"] == "error" and cut["error"]["code"] != "timeout", cut
    again = await w.probe.request(
        "desk/send_stream", {"session_id": sid, "chunk": "b", "finish": True}
    )
    assert again["status"] == "ok", again
    messages = await w.admin.messages(sid)
    assert [(m["text"], m["finished"]) for m in messages] == [("a", False), ("b", True)]


async def test_a_quiet_message_is_finished_by_the_bridge(broker: Broker, base: str) -> None:
    desk = {"stream_idle_timeout": 0.3}
    async with world_of(broker, base, ivh={"enabled": False}, desk=desk) as w:
        sid = await w.admin.desk_session()
        await w.probe.publish(f"desk/{sid}/stream", b"hello")
        finished = await w.probe.wait_json(
            f"desk/{sid}/event", lambda e: e["type"] == "stream_finished", timeout=5
        )
        assert finished["data"]["reason"] == "idle" and finished["data"]["chunks"] == 2
        messages = await w.admin.messages(sid)
        assert [(m["text"], m["finished"]) for m in messages] == [("hello", True)]


async def test_an_idle_finish_that_fails_is_not_tried_forever(broker: Broker, base: str) -> None:
    """The cloud refuses the bridge's idle finish: the message is given up once (a warning),
    and the next chunk starts a new message."""
    desk = {"stream_idle_timeout": 0.5}
    async with world_of(broker, base, ivh={"enabled": False}, desk=desk) as w:
        sid = await w.admin.desk_session()
        await w.probe.publish(f"desk/{sid}/stream", b"hello")
        async with asyncio.timeout(5):
            while not await w.admin.journal("send_stream_msg"):
                await asyncio.sleep(0.02)
        await w.admin.fault("send_stream_msg", 1, error_code=141004)  # for the idle finish
        await asyncio.sleep(2.5)  # several idle periods
        assert len(await w.admin.journal("send_stream_msg")) == 2  # the chunk, one finish
        done = await w.probe.request(
            "desk/send_stream", {"session_id": sid, "chunk": "next", "finish": True}
        )
        assert done["status"] == "ok", done
        messages = await w.admin.messages(sid)
        assert [(m["text"], m["finished"]) for m in messages] == [
            ("hello", False),
            ("next", True),
        ]


async def test_a_refused_finish_keeps_the_message_open_for_another(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    await w.probe.request("desk/send_stream", {"session_id": sid, "chunk": "a"})
    await w.admin.fault("send_stream_msg", 1, error_code=141004)
    refused = await w.probe.request("desk/send_stream", {"session_id": sid, "finish": True})
    assert refused["error"]["upstream_code"] == 141004
    done = await w.probe.request("desk/send_stream", {"session_id": sid, "finish": True})
    assert done["status"] == "ok", done
    messages = await w.admin.messages(sid)
    assert [(m["text"], m["finished"]) for m in messages] == [("a", True)]


async def test_state_changes_are_watched_and_end(world: World) -> None:
    w = world
    sid = await w.admin.desk_session(state="chatbot")
    await w.probe.publish(f"desk/{sid}/watch", {"interval": 0.1})
    first = await w.probe.wait_json(f"desk/{sid}/state")
    assert first["state"] == "chatbot"
    await w.admin.desk_state(sid, "agent", "agent@example.com")
    state = await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "agent")
    assert state["agent_id"] == "agent@example.com" and state["raw_state"] == "Agent"
    change = await w.probe.wait_json(
        f"desk/{sid}/event", lambda e: e["type"] == "state_changed" and e["after"] == "agent"
    )
    assert change["before"] == "chatbot"
    await w.admin.end_desk(sid)
    ended = await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "session_ended")
    assert ended["after"] == "ended"
    await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "ended")
    calls = len(await w.admin.journal("get_session_state"))
    await asyncio.sleep(0.5)
    assert len(await w.admin.journal("get_session_state")) == calls  # no longer polled


async def test_an_ended_session_is_cleared_and_forgotten_after_its_retention(
    broker: Broker, base: str
) -> None:
    async with world_of(broker, base, ivh={"enabled": False}, desk={"ended_retention": 1.0}) as w:
        sid = await w.admin.desk_session(state="chatbot")
        first = await w.probe.request("desk/get_session_state", {"session_id": sid})
        assert first["status"] == "ok"
        await w.admin.end_desk(sid)
        gone = await w.probe.request("desk/get_session_state", {"session_id": sid})
        assert gone["error"]["code"] == "session_not_found"
        topic = f"{base}/desk/{sid}/state"
        await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "ended")
        ended_at = time.monotonic()
        start = len(w.probe.messages)
        await w.probe.wait_for(lambda m: m.topic == topic and not m.payload, 5, start)
        assert 0.8 <= time.monotonic() - ended_at <= 3.5
        assert await _retained(broker, topic) is None
        # forgotten: the next query finds it gone as on the first time (an event, seq anew)
        events = [e["type"] for e in w.probe.on(f"desk/{sid}/event")]
        assert events == ["state_changed", "session_ended"]
        await w.probe.request("desk/get_session_state", {"session_id": sid})
        again = await w.probe.wait_for(
            lambda m: m.topic == f"{base}/desk/{sid}/event" and bool(m.payload), 5, start
        )
        assert again.json()["type"] == "session_ended" and again.json()["seq"] == 1
        assert again.json()["before"] is None
        retained = await _retained(broker, topic)
        assert retained is not None and json.loads(retained)["state"] == "ended"


async def _retained(broker: Broker, topic: str) -> bytes | None:
    """What the broker holds retained on `topic` (a new subscriber's view), or None."""
    async with Probe(broker.port, topic.split("/")[0]) as late:
        await asyncio.sleep(0.3)
        held = [m.payload for m in late.messages if m.topic == topic]
    return held[0] if held else None


async def test_get_by_user_and_shorthand(world: World) -> None:
    w = world
    sid = await w.admin.desk_session(
        state="queuing", client_user_id="u1", customer_service_id="@cs"
    )
    by_user = await w.probe.request(
        "desk/get_session_state", {"client_user_id": "u1", "customer_service_id": "@cs"}
    )
    assert by_user["data"]["session_id"] == sid and by_user["data"]["state"] == "queuing"
    await w.probe.publish(f"desk/{sid}/get", b"")
    got = await w.probe.wait_json(
        "bridge/response/desk/get_session_state", lambda r: r["session_id"] == sid
    )
    assert got["status"] == "ok"
    missing = await w.probe.request("desk/get_session_state", {"session_id": "nope"})
    assert missing["error"]["code"] == "session_not_found"


async def test_get_republishes_an_unchanged_state_without_an_event(world: World) -> None:
    w = world
    sid = await w.admin.desk_session(state="chatbot")
    first = await w.probe.request("desk/get_session_state", {"session_id": sid})
    assert first["status"] == "ok"
    await w.probe.wait_json(f"desk/{sid}/state")
    await w.probe.publish(f"desk/{sid}/state", b"", retain=True)  # an operator clears it
    start = len(w.probe.messages)
    await w.probe.publish(f"desk/{sid}/get", b"")
    state = await w.probe.wait_for(
        lambda m: m.topic == f"{w.probe.base}/desk/{sid}/state" and bool(m.payload), 5, start
    )
    assert state.json()["state"] == first["data"]["state"]
    assert len(w.probe.on(f"desk/{sid}/event")) == 1  # the first fetch's change only


async def test_a_chunk_that_looks_like_json_but_is_not_is_sent_as_text(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    await w.probe.publish(f"desk/{sid}/stream", b"{hello} ")
    await w.probe.publish(f"desk/{sid}/stream", {"chunk": "[world]", "finish": True})
    done = await w.probe.wait_json("bridge/response/desk/send_stream", timeout=10)
    assert done["status"] == "ok", done
    assert [m["text"] for m in await w.admin.messages(sid)] == ["{hello} [world]"]


async def test_a_stream_to_a_session_that_is_gone_publishes_it_ended(world: World) -> None:
    w = world
    sid = await w.admin.desk_session(state="chatbot")
    await w.admin.end_desk(sid)
    sent = await w.probe.request(
        "desk/send_stream", {"session_id": sid, "chunk": "hello", "finish": True}
    )
    assert sent["error"]["code"] == "session_not_found", sent
    state = await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "ended")
    assert state["agent_id"] is None
    ended = await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "session_ended")
    assert ended["after"] == "ended"
