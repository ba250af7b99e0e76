"""Digital Human over MQTT, end to end: real mosquitto, the emulator over sockets, the bridge."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterable
from typing import Any

import pytest

from bridge.features.ivh.feature import IvhFeature
from bridge.tencent.models import SessionInfo
from tests.support.broker import Broker
from tests.support.world import World, world_of


@pytest.fixture
async def world(broker: Broker, base: str) -> AsyncIterator[World]:
    async with world_of(broker, base, desk={"enabled": False}) as w:
        yield w


async def create_started(w: World, user: str = "kiosk-1", **extra: Any) -> str:
    reply = await w.probe.request(
        "ivh/create_session",
        {
            "virtualman_project_id": "proj-1",
            "user_id": user,
            "protocol": "webrtc",
            "driver_type": 1,
            **extra,
        },
    )
    assert reply["status"] == "ok", reply
    sid = str(reply["data"]["session_id"])
    assert reply["session_id"] == sid  # the envelope names the session it created
    await w.probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
    started = await w.probe.request("ivh/start_session", {"session_id": sid})
    assert started["status"] == "ok", started
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected")
    return sid


def events(w: World, sid: str, kind: str | None = None) -> list[dict[str, Any]]:
    return [e for e in w.probe.on(f"ivh/{sid}/event") if kind is None or e["type"] == kind]


async def wait_event(w: World, sid: str, check: Any, timeout: float = 5.0) -> dict[str, Any]:
    return dict(await w.probe.wait_json(f"ivh/{sid}/event", check, timeout=timeout))


async def test_create_start_drive_close_and_clear(world: World) -> None:
    w = world
    sid = await create_started(w)
    reply = await w.probe.request(
        "ivh/send_text", {"session_id": sid, "text": "hello", "chat_command": "NotUseChat"}
    )
    assert reply["status"] == "ok", reply
    req_id = reply["data"]["req_id"]
    await wait_event(
        w,
        sid,
        lambda e: (
            e["type"] == "speak_status"
            and e["data"]["req_id"] == req_id
            and e["data"]["speak_status"] == "TextOver"
        ),
    )
    statuses = [
        e["data"]["speak_status"]
        for e in events(w, sid, "speak_status")
        if e["data"]["req_id"] == req_id
    ]
    assert statuses.index("TextStart") < statuses.index("TextOver")
    assert all("raw" in e["data"] for e in events(w, sid, "speak_status"))
    seqs = [e["seq"] for e in events(w, sid)]
    assert seqs == list(range(seqs[0], seqs[0] + len(seqs)))

    closed = await w.probe.request("ivh/close_session", {"session_id": sid})
    assert closed["status"] == "ok"
    state = await w.probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "closed")
    assert state["status_code"] == 2
    await wait_event(w, sid, lambda e: e["type"] == "session_closed")
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "closed")
    # after closed_retention (1 s) the retained topics are cleared
    state_topic = f"{w.probe.base}/ivh/{sid}/state"
    await w.probe.wait_for(lambda m: m.topic == state_topic and m.payload == b"", timeout=5)
    snapshot = await w.probe.wait_json(
        "ivh/sessions", lambda s: all(x["session_id"] != sid for x in s["sessions"])
    )
    assert snapshot["sessions"] == []


async def test_shorthand_close_and_get(world: World) -> None:
    w = world
    sid = await create_started(w, "kiosk-2")
    await w.probe.publish(f"ivh/{sid}/get", b"")
    got = await w.probe.wait_json("bridge/response/ivh/get_session")
    assert got["status"] == "ok" and got["data"]["started"] is True
    assert got["session_id"] == sid
    await w.probe.publish(f"ivh/{sid}/close", b"{}")
    done = await w.probe.wait_json("bridge/response/ivh/close_session")
    assert done["status"] == "ok"
    await w.probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "closed")


async def test_status_changes_in_the_cloud_become_events(world: World) -> None:
    w = world
    sid = await create_started(w, "kiosk-3")
    await w.admin.set_ivh_status(sid, 2)
    event = await wait_event(
        w, sid, lambda e: e["type"] == "status_changed" and e["after"] == "closed"
    )
    assert event["before"] == "in_progress"
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "closed")
    await asyncio.sleep(0.6)
    channel_states = [c["state"] for c in w.probe.on(f"ivh/{sid}/channel")]
    assert channel_states[-1] == "closed"  # a closed session's channel is not reopened


async def test_dropped_socket_reconnects_without_duplicate_events(world: World) -> None:
    w = world
    sid = await create_started(w, "kiosk-4")
    for text in ("one", "two"):
        reply = await w.probe.request(
            "ivh/send_text", {"session_id": sid, "text": text, "chat_command": "NotUseChat"}
        )
        req = reply["data"]["req_id"]
        await wait_event(
            w,
            sid,
            lambda e, r=req: (
                e["data"].get("req_id") == r and e["data"].get("speak_status") == "TextOver"
            ),
        )
    before = len(events(w, sid, "speak_status"))
    await w.admin.drop(sid)
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "reconnecting")
    await w.probe.wait_json(
        f"ivh/{sid}/channel",
        lambda c: c["state"] == "connected" and w.app.features[0].status()["open_channels"] == 1,
    )
    await asyncio.sleep(0.5)  # the cloud re-sends the last drives' speak status now
    keys = [
        (e["data"]["req_id"], e["data"]["speak_status"], e["data"].get("seq"))
        for e in events(w, sid, "speak_status")
    ]
    assert len(keys) == len(set(keys)) == before
    journal = await w.admin.journal("commandchannel")
    assert any(e.get("kind") == "ws_open" for e in journal)


async def test_text_drives_are_paced(world: World) -> None:
    w = world
    sid = await create_started(w, "kiosk-5")
    replies = await asyncio.gather(
        *[w.probe.request("ivh/send_text", {"session_id": sid, "text": f"t{i}"}) for i in range(2)]
    )
    assert all(r["status"] == "ok" for r in replies)
    frames = [
        e
        for e in await w.admin.journal("")
        if e.get("kind") == "ws_in" and _command(e) == "SEND_TEXT"
    ]
    assert len(frames) == 2
    assert frames[1]["ts"] - frames[0]["ts"] > 1.0  # Tencent: more than 1 s apart (A.5)


def _command(entry: dict[str, Any]) -> str | None:
    frame = entry.get("frame") or entry.get("body") or {}
    payload = frame.get("Payload", frame) if isinstance(frame, dict) else {}
    return payload.get("Command") if isinstance(payload, dict) else None


async def test_a_chunk_refused_for_a_full_queue_leaves_no_gap_in_seq(
    broker: Broker, base: str
) -> None:
    """A stream's Seq counts the chunks sent (A.5: from 1, one ReqId per utterance): a chunk
    refused because the session's queue is full must not take a number."""
    channel = {"queue_size": 2, "text_interval": 1.0}
    async with world_of(broker, base, desk={"enabled": False}, ivh={"channel": channel}) as w:
        sid = await create_started(w, "kiosk-q")
        first = await w.probe.request("ivh/send_text", {"session_id": sid, "text": "a"})
        assert first["status"] == "ok", first
        paced = asyncio.create_task(
            w.probe.request("ivh/send_text", {"session_id": sid, "text": "b"})
        )  # waits about a second behind the first
        await asyncio.sleep(0.2)
        chunk = asyncio.create_task(
            w.probe.request("ivh/stream_text", {"session_id": sid, "text": "one"})
        )
        await asyncio.sleep(0.2)
        refused = await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "two"})
        assert refused["status"] == "error", refused
        assert (await paced)["status"] == "ok"
        assert (await chunk)["data"]["seq"] == 1
        after = await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "three"})
        assert after["data"]["seq"] == 2, after


async def test_stream_text_and_interrupt(world: World) -> None:
    w = world
    sid = await create_started(w, "kiosk-6")
    first = await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "Hello, "})
    second = await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "world."})
    assert first["data"]["req_id"] == second["data"]["req_id"]
    assert (first["data"]["seq"], second["data"]["seq"]) == (1, 2)
    stop = await w.probe.request("ivh/interrupt", {"session_id": sid})
    assert stop["data"] == {"req_id": first["data"]["req_id"], "command": "SEND_STREAMTEXT"}
    sent = [e for e in await w.admin.journal("") if _command(e) == "SEND_STREAMTEXT"]
    data = [(e.get("frame") or e.get("body") or {})["Payload"]["Data"] for e in sent]
    assert data[-1]["Interrupt"] is True and data[-1]["Seq"] == 3 and data[-1]["Text"] == ""
    nxt = await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "x", "final": True})
    assert nxt["data"]["req_id"] != first["data"]["req_id"] and nxt["data"]["seq"] == 1


async def test_a_chunk_over_1000_bytes_goes_out_in_frames_both_doc_versions_accept(
    world: World,
) -> None:
    """SEND_STREAMTEXT Text: <= 2000 bytes (current zh doc), <= 1000 (older EN doc) [D]. A
    chunk of up to 2000 is taken, and sent as frames of at most 1000 bytes, cut between
    characters, each with the next Seq; only the last of a final chunk is final."""
    w = world
    sid = await create_started(w, "kiosk-big")
    text = "语" * 600  # 1,800 bytes
    reply = await w.probe.request(
        "ivh/stream_text", {"session_id": sid, "text": text, "final": True}
    )
    assert reply["status"] == "ok", reply
    sent = [e for e in await w.admin.journal("") if _command(e) == "SEND_STREAMTEXT"]
    payloads = [(e.get("frame") or e.get("body") or {})["Payload"] for e in sent]
    data = [p["Data"] for p in payloads]
    assert "".join(d["Text"] for d in data) == text
    assert all(len(d["Text"].encode()) <= 1000 for d in data) and len(data) == 2
    assert [d["Seq"] for d in data] == [1, 2] and [d["IsFinal"] for d in data] == [False, True]
    assert {p["ReqId"] for p in payloads} == {reply["data"]["req_id"]}
    assert reply["data"]["seq"] == 2
    too_big = await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "x" * 2001})
    assert too_big["error"]["code"] == "payload_too_large"


async def test_drive_limits_and_states(world: World) -> None:
    w = world
    created = await w.probe.request(
        "ivh/create_session",
        {
            "virtualman_project_id": "p",
            "user_id": "kiosk-7",
            "protocol": "webrtc",
            "driver_type": 1,
        },
    )
    sid = created["data"]["session_id"]
    empty = await w.probe.request("ivh/send_text", {"session_id": sid, "text": ""})
    assert empty["error"]["code"] == "invalid_payload"
    assert "ivh/interrupt" in empty["error"]["message"]
    early = await w.probe.request("ivh/send_text", {"session_id": sid, "text": "hi"})
    assert early["error"]["code"] == "channel_unavailable"
    big = await w.probe.request("ivh/send_text", {"session_id": sid, "text": "é" * 2001})
    assert big["error"]["code"] == "payload_too_large"
    await w.probe.request("ivh/close_session", {"session_id": sid})
    late = await w.probe.request("ivh/send_text", {"session_id": sid, "text": "hi"})
    assert late["error"]["code"] == "session_closed"


async def test_llm_content_events(world: World) -> None:
    w = world
    sid = await create_started(w, "kiosk-8")
    await w.probe.request("ivh/send_text", {"session_id": sid, "text": "what is MQTT?"})
    event = await wait_event(w, sid, lambda e: e["type"] == "llm_content")
    assert "text" in event["data"] and "raw" in event["data"]


async def test_interrupt_waits_for_text_start(broker: Broker, base: str) -> None:
    """docs/protocol.md A.5: an interrupt is sent only once the drive it stops has begun
    speaking."""
    async with world_of(broker, base, cloud={"speak_delay": 0.3}, desk={"enabled": False}) as w:
        sid = await create_started(w, "kiosk-9")
        first, stop = await asyncio.gather(
            w.probe.request("ivh/stream_text", {"session_id": sid, "text": "A long clause."}),
            w.probe.request("ivh/interrupt", {"session_id": sid}),
        )
        assert first["status"] == stop["status"] == "ok", (first, stop)
        journal = await w.admin.journal("commandchannel")

    def payload(entry: dict[str, Any]) -> dict[str, Any]:
        return dict((entry.get("frame") or entry.get("body") or {}).get("Payload") or {})

    req_id = first["data"]["req_id"]
    started = next(
        (
            e["index"]
            for e in journal
            if e["kind"] == "ws_out"
            and payload(e).get("ReqId") == req_id
            and payload(e).get("SpeakStatus") == "TextStart"
        ),
        None,
    )
    sent = next(
        e["index"]
        for e in journal
        if e["kind"] == "ws_in" and payload(e).get("Data", {}).get("Interrupt") is True
    )
    assert started is not None, "the interrupt stopped the clause before it began speaking"
    assert sent > started


async def test_a_stream_lives_as_long_as_the_sessions_stream_max_interval(world: World) -> None:
    w = world
    slow = await create_started(w, "kiosk-10", stream_max_interval=4000)
    fast = await create_started(w, "kiosk-11")
    first = {sid: await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "One, "})
             for sid in (slow, fast)}  # fmt: skip
    await asyncio.sleep(2.3)  # past the default 2 s, within the slow session's 4 s
    later = {sid: await w.probe.request("ivh/stream_text", {"session_id": sid, "text": "two."})
             for sid in (slow, fast)}  # fmt: skip
    assert later[slow]["data"]["req_id"] == first[slow]["data"]["req_id"]
    assert later[slow]["data"]["seq"] == 2
    assert later[fast]["data"]["req_id"] != first[fast]["data"]["req_id"]
    assert later[fast]["data"]["seq"] == 1


@pytest.mark.parametrize(
    "odd",
    [
        {"Type": 3, "ReqId": ["a"], "SpeakStatus": "TextStart"},
        {"Type": 3, "ReqId": "r", "SpeakStatus": {"x": 1}, "Seq": [1]},
        {"Type": 4, "ReqId": {"nested": True}, "Content": "x"},
    ],
)
async def test_odd_frame_fields_become_events_and_keep_the_socket(
    world: World, odd: dict[str, Any]
) -> None:
    """A frame whose fields are lists or objects where the protocol has strings: an event like
    any other, and the socket stays up (it was a TypeError in the read loop: a reconnect, and
    then the cloud's replay of the same frame)."""
    w = world
    sid = await create_started(w, "kiosk-odd")
    await w.admin.call("POST", f"/ivh/sessions/{sid}/push", {"frame": odd})
    await w.admin.call("POST", f"/ivh/sessions/{sid}/push", {"frame": {"Type": 4, "Content": "ok"}})
    await wait_event(w, sid, lambda e: e["data"].get("content") == "ok")
    odd_events = [
        e
        for e in events(w, sid)
        if e["data"].get("raw", {}).get("Payload") == {"SessionId": sid, **odd}
    ]
    assert len(odd_events) == 1, events(w, sid)
    opened = [
        e
        for e in await w.admin.journal("commandchannel")
        if e["kind"] == "ws_open" and e["session_id"] == sid
    ]
    assert len(opened) == 1  # never reconnected


async def test_a_listing_taken_before_a_create_does_not_close_the_new_session(
    world: World,
) -> None:
    """A poll's listing is a snapshot from when it was asked for: a session created while it
    was on its way is missing from it, and must not be published closed (a closed session
    never reopens, so it could never be driven)."""
    w = world
    await w.admin.fault("listsessionofuin", 1, latency_ms=600)  # the next poll's answer
    await asyncio.sleep(0.3)  # that poll has asked (polls are 0.2 s apart), and waits
    sid = await create_started(w, "kiosk-race")
    await asyncio.sleep(0.8)  # the late listing, without the session, has been applied
    statuses = [s["status"] for s in w.probe.on(f"ivh/{sid}/state")]
    assert "closed" not in statuses, statuses
    reply = await w.probe.request("ivh/send_text", {"session_id": sid, "text": "still here"})
    assert reply["status"] == "ok", reply


async def test_a_poll_lets_waiting_work_run_between_the_listing_and_the_diff(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A large listing is parsed in one loop step and diffed in another: a command or an event
    that arrived meanwhile does not wait for both."""
    feature = world.app.features[0]
    assert isinstance(feature, IvhFeature)
    order: list[str] = []
    # the feature's own collaborators, wrapped to record the order of their calls
    real_list, real_apply = feature._client.list_sessions, feature._tracker.apply_list  # noqa: SLF001

    async def listing() -> list[SessionInfo]:
        infos = await real_list()
        asyncio.get_running_loop().call_soon(order.append, "waiting work")
        return infos

    def diff(infos: Iterable[SessionInfo], **kwargs: Any) -> None:
        order.append("diff")
        real_apply(infos, **kwargs)

    monkeypatch.setattr(feature._client, "list_sessions", listing)  # noqa: SLF001
    monkeypatch.setattr(feature._tracker, "apply_list", diff)  # noqa: SLF001
    await feature.poll_once()
    assert order == ["waiting work", "diff"]


async def test_get_republishes_an_unchanged_state_without_an_event(world: World) -> None:
    w = world
    sid = await create_started(w, "kiosk-get")
    await w.probe.publish(f"ivh/{sid}/state", b"", retain=True)  # an operator clears it
    start, seen = len(w.probe.messages), len(events(w, sid))
    await w.probe.publish(f"ivh/{sid}/get", b"")
    state = await w.probe.wait_for(
        lambda m: m.topic == f"{w.probe.base}/ivh/{sid}/state" and bool(m.payload), 5, start
    )
    assert state.json()["status"] == "in_progress" and state.json()["started"] is True
    await w.probe.wait_json("bridge/response/ivh/get_session")
    assert len(events(w, sid)) == seen  # nothing changed: no event
