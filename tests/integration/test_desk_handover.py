"""Desk handover, history and session event callbacks, end to end over real sockets: mosquitto,
the emulator, the bridge's HTTP endpoint and the emulator's deliveries to it."""

from __future__ import annotations

import asyncio
import secrets
import socket
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import httpx
import pytest

from tests.support.broker import Broker
from tests.support.world import World, world_of

BURST = 1000


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
async def world(broker: Broker, base: str) -> AsyncIterator[World]:
    async with world_of(broker, base, ivh={"enabled": False}) as w:
        yield w


@pytest.fixture
async def hooked(broker: Broker, base: str) -> AsyncIterator[tuple[World, str]]:
    """A bridge receiving callbacks on a secret path, the emulator delivering to it."""
    path = f"/desk/callback/{secrets.token_urlsafe(24)}"
    port = free_port()
    desk = {"callback": path}
    http = {"listen": f"127.0.0.1:{port}"}
    async with world_of(broker, base, ivh={"enabled": False}, desk=desk, http=http) as w:
        url = f"http://127.0.0.1:{port}{path}"
        await _until_serving(url)
        await w.admin.call("POST", "/desk/callback", {"url": url})
        yield w, url


async def _until_serving(url: str) -> None:
    async with httpx.AsyncClient() as http:
        for _ in range(100):
            try:
                await http.get(url.rsplit("/desk/", 1)[0] + "/healthz")
                return
            except httpx.TransportError:
                await asyncio.sleep(0.05)
    raise AssertionError("the bridge's HTTP endpoint never came up")


async def test_transfer_queues_the_session_and_answers_the_agent(world: World) -> None:
    w = world
    sid = await w.admin.desk_session(state="chatbot")
    await w.admin.call("POST", "/desk/handover", {"outcome": "agent", "agent_id": "alice@x"})
    reply = await w.probe.request(
        "desk/transfer_to_human",
        {"session_id": sid, "priority": 3, "disable_queuing": True, "queue_timeout": 60},
    )
    assert reply["status"] == "ok", reply
    assert reply["data"]["agent_id"] == "alice@x"
    assert len(await w.admin.journal("transfer_to_human")) == 1
    session = await w.admin.call("GET", f"/desk/sessions/{sid}")
    assert session["state"] == "agent" and session["transferred"] is True


async def test_transfer_that_stays_queued_has_no_agent(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    await w.admin.call("POST", "/desk/handover", {"outcome": "queuing"})
    await w.probe.publish(f"desk/{sid}/transfer", b"")
    reply = await w.probe.wait_json("bridge/response/desk/transfer_to_human")
    assert reply["status"] == "ok" and reply["data"]["agent_id"] is None, reply
    assert (await w.admin.call("GET", f"/desk/sessions/{sid}"))["state"] == "queuing"


async def test_transfer_fields_are_checked_before_any_call(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    for bad in ({"priority": 10}, {"disable_queuing": 2}, {"agent_ids": ["a b"]}, {"x": 1}):
        reply = await w.probe.request("desk/transfer_to_human", {"session_id": sid, **bad})
        assert reply["error"]["code"] == "invalid_payload", (bad, reply)
    assert await w.admin.journal("transfer_to_human") == []


async def test_end_after_transfer_and_unknown_session(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    early = await w.probe.request("desk/end_session", {"session_id": sid})
    assert early["error"]["upstream_code"] == 141004, early  # never transferred
    await w.probe.request("desk/transfer_to_human", {"session_id": sid})
    await w.probe.publish(f"desk/{sid}/end", b"")
    ended = await w.probe.wait_json(
        "bridge/response/desk/end_session", lambda r: r["status"] == "ok"
    )
    assert ended["data"]["ended"] is True
    state = await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "ended")
    assert state["session_id"] == sid
    gone = await w.probe.request("desk/get_messages", {"session_id": "no-such-session"})
    assert gone["error"]["code"] == "session_not_found", gone


async def test_messages_paged_in_both_orders(world: World) -> None:
    w = world
    sid = await w.admin.desk_session()
    for i in range(5):
        await w.admin.call("POST", f"/desk/sessions/{sid}/chat", {"role": "user", "text": f"u{i}"})
        await asyncio.sleep(0.002)  # distinct millisecond timestamps
    await w.probe.request("desk/send_stream", {"session_id": sid, "chunk": "bot!", "finish": True})
    newest = await w.probe.request("desk/get_messages", {"session_id": sid, "limit": 2})
    assert newest["status"] == "ok", newest
    data = newest["data"]
    assert data["total_count"] == 6
    assert [m["text"] for m in data["messages"]] == ["bot!", "u4"]
    assert [m["role"] for m in data["messages"]] == ["system", "user"]
    assert data["messages"][0]["time"].endswith("Z")
    oldest = await w.probe.request(
        "desk/get_messages", {"session_id": sid, "limit": 2, "offset": 1, "order": "oldest_first"}
    )
    assert [m["text"] for m in oldest["data"]["messages"]] == ["u1", "u2"]
    bad = await w.probe.request("desk/get_messages", {"session_id": sid, "limit": 101})
    assert bad["error"]["code"] == "invalid_payload"


async def _events(w: World, sid: str, count: int, timeout: float = 5) -> list[dict[str, Any]]:
    await w.probe.wait_json(
        f"desk/{sid}/event",
        timeout=timeout,
        check=lambda _: len(w.probe.on(f"desk/{sid}/event")) >= count,
    )
    return list(w.probe.on(f"desk/{sid}/event"))


async def test_callbacks_become_events_with_the_message_text(hooked: tuple[World, str]) -> None:
    w, _ = hooked
    sid = await w.admin.desk_session()
    await w.admin.call("POST", f"/desk/sessions/{sid}/chat", {"role": "user", "text": "hi there"})
    await w.admin.call("POST", f"/desk/sessions/{sid}/chat", {"role": "bot", "text": "hello!"})
    events = await _events(w, sid, 3)
    types = [e["type"] for e in events]
    assert (
        types[:3] == ["session_begin", "state_changed", "user_message"] or "user_message" in types
    )
    user = next(e for e in events if e["type"] == "user_message")
    assert user["data"]["text"] == "hi there" and user["data"]["session_id"] == sid
    assert user["data"]["raw"]["Event"] == "ChatBot.UserSendMsg"
    bot = await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "bot_message")
    assert bot["data"]["text"] == "hello!"


async def test_transfer_moves_the_state_once_with_polling_too(hooked: tuple[World, str]) -> None:
    w, _ = hooked
    sid = await w.admin.desk_session()
    await w.probe.request("desk/watch", {"session_id": sid, "interval": 0.1})
    await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "chatbot")
    await w.admin.call("POST", "/desk/handover", {"outcome": "agent", "agent_id": "bob@x"})
    await w.probe.request("desk/transfer_to_human", {"session_id": sid})
    await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "transfer_succeeded")
    await asyncio.sleep(0.5)  # several polls
    changes = list(w.probe.on(f"desk/{sid}/event"))
    to_agent = [e for e in changes if e["type"] == "state_changed" and e["after"] == "agent"]
    assert len(to_agent) == 1, changes
    state = w.probe.on(f"desk/{sid}/state")[-1]
    assert state["state"] == "agent" and state["agent_id"] == "bob@x"


async def test_duplicate_deliveries_publish_once(hooked: tuple[World, str]) -> None:
    w, _ = hooked
    sid = await w.admin.desk_session()
    await _events(w, sid, 2)  # session_begin, then the state it implies
    await w.admin.call("POST", "/desk/callback", {"duplicate": 1})
    await w.admin.call("POST", f"/desk/sessions/{sid}/chat", {"role": "user", "text": "once"})
    await w.admin.call("POST", f"/desk/sessions/{sid}/chat", {"role": "user", "text": "twice?"})
    await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["data"].get("text") == "twice?")
    await asyncio.sleep(0.2)
    texts = [m["data"].get("text") for m in w.probe.on(f"desk/{sid}/event")]
    assert texts.count("once") == 1 and texts.count("twice?") == 1, texts
    view = await w.admin.call("GET", "/desk/callback")
    assert view["counts"]["acked"] >= 4  # the duplicate was delivered and answered OK


async def test_timeouts_and_unknown_events_are_published(
    hooked: tuple[World, str],
) -> None:
    w, _ = hooked
    sid = await w.admin.desk_session()
    await _events(w, sid, 2)  # session_begin, then the state it implies
    # a user timeout with any event name reaches MQTT as its own type
    await w.admin.call("POST", f"/desk/sessions/{sid}/event", {"event": "User.Timeout"})
    await w.admin.call("POST", f"/desk/sessions/{sid}/event", {"event": "Some.NewThing"})
    other = await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "callback")
    assert other["data"]["event"] == "Some.NewThing"
    assert any(m["type"] == "user_timeout" for m in w.probe.on(f"desk/{sid}/event"))


async def test_a_bad_time_is_published_without_one_and_the_next_event_follows(
    hooked: tuple[World, str],
) -> None:
    w, _ = hooked
    sid = await w.admin.desk_session()
    await _events(w, sid, 2)
    fields = {"EventTime": 10**17}  # past year 9999: no date holds it
    await w.admin.call(
        "POST", f"/desk/sessions/{sid}/event", {"event": "User.Timeout", "fields": fields}
    )
    await w.admin.call("POST", f"/desk/sessions/{sid}/event", {"event": "Some.NewThing"})
    await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "callback")
    timeout = next(m for m in w.probe.on(f"desk/{sid}/event") if m["type"] == "user_timeout")
    assert timeout["data"]["time"] is None and timeout["data"]["raw"]["EventTime"] == 10**17


def _states(w: World, sid: str) -> list[str]:
    return [s["state"] for s in w.probe.on(f"desk/{sid}/state")]


async def test_a_transfer_waiting_for_the_agent_retains_what_the_service_says(
    hooked: tuple[World, str],
) -> None:
    """`Transfer.Success` leaves Agent or WaitingForAgentAnswering: the bridge asks, so the
    retained state is the service's, and polling beside it publishes the change once."""
    w, _ = hooked
    sid = await w.admin.desk_session()
    await w.probe.request("desk/watch", {"session_id": sid, "interval": 0.1})
    await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "chatbot")
    await w.admin.call(
        "POST", "/desk/handover", {"outcome": "waiting_for_agent", "agent_id": "a@x"}
    )
    await w.probe.request("desk/transfer_to_human", {"session_id": sid})
    await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "transfer_succeeded")
    await asyncio.sleep(0.5)  # the state query, and several polls
    changes = [e for e in w.probe.on(f"desk/{sid}/event") if e["type"] == "state_changed"]
    assert [e["after"] for e in changes].count("waiting_for_agent") == 1, changes
    assert "agent" not in [e["after"] for e in changes]
    assert _states(w, sid)[-1] == "waiting_for_agent"


async def test_a_late_delivery_moves_no_state_back(hooked: tuple[World, str]) -> None:
    w, _ = hooked
    sid = await w.admin.desk_session()
    await w.probe.wait_json(f"desk/{sid}/state", lambda s: s["state"] == "chatbot")
    await w.admin.call("POST", "/desk/callback", {"delay_ms": 300, "delay_count": 1})
    await w.admin.call("POST", "/desk/handover", {"outcome": "agent", "agent_id": "bob@x"})
    await w.probe.request("desk/transfer_to_human", {"session_id": sid})  # Transfer.Start late
    await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "transfer_started", 3)
    await asyncio.sleep(0.2)
    states = _states(w, sid)
    assert states[-1] == "agent", states
    assert "queuing" not in states[states.index("agent") :], states  # never back


async def _chunks(chunk: bytes, count: int) -> AsyncIterator[bytes]:
    for _ in range(count):
        yield chunk


async def test_refusals(hooked: tuple[World, str]) -> None:
    w, url = hooked
    sid = await w.admin.desk_session()
    await _events(w, sid, 2)  # session_begin, then the state it implies
    before = len(w.probe.on(f"desk/{sid}/event"))
    body = {"CallbackCommand": "Desk.SessionEventNotify", "SessionId": sid, "Event": "X"}
    query = {"SdkAppid": str(w.emu.config.sdkappid), "CallbackCommand": "Desk.SessionEventNotify"}
    async with httpx.AsyncClient() as http:
        wrong_app = await http.post(url, params={**query, "SdkAppid": "1"}, json=body)
        wrong_cmd = await http.post(url, params={**query, "CallbackCommand": "X"}, json=body)
        big = await http.post(url, params=query, content=b"{" + b" " * 70_000 + b"}")
        chunked = await http.post(url, params=query, content=_chunks(b" " * 8_000, 9))
        unknown = await http.post(url.rsplit("/", 1)[0] + "/guess", params=query, json=body)
        read = await http.get(url, params=query)
    assert wrong_app.status_code == 403 and wrong_cmd.status_code == 400
    assert big.status_code == 413 and chunked.status_code == 413  # no length: counted as read
    assert unknown.status_code == 404 and read.status_code == 405
    path = url.split("127.0.0.1", 1)[1].split("/", 1)[1]
    for answer in (wrong_app, wrong_cmd, big, chunked, unknown, read):
        assert path not in answer.text
    await asyncio.sleep(0.2)
    assert len(w.probe.on(f"desk/{sid}/event")) == before


async def test_a_burst_of_callbacks_loses_none(hooked: tuple[World, str]) -> None:
    """1,000 at once, none lost (the answer times: bench/desk_callback.py). aiohttp sends them:
    httpx's pool is quadratic in the requests waiting for a connection (28 s of CPU here)."""
    w, url = hooked
    query = {"SdkAppid": str(w.emu.config.sdkappid), "CallbackCommand": "Desk.SessionEventNotify"}
    text = [{"MsgType": "TIMTextElem", "MsgContent": {"Text": "burst"}}]

    async def post(http: aiohttp.ClientSession, i: int) -> int:
        body = {"SessionId": f"burst-{i}", "Event": "ChatBot.UserSendMsg", "MsgBody": text}
        params = {**query, "RequestID": f"r{i}"}
        async with http.post(url, params=params, json=body) as answer:
            return answer.status

    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30)) as http:
        codes = await asyncio.gather(*(post(http, i) for i in range(BURST)))
    assert set(codes) == {200}

    def count() -> int:
        return sum(
            1 for m in w.probe.messages if m.topic.endswith("/event") and b"burst" in m.payload
        )

    async with asyncio.timeout(30):
        while count() < BURST:
            await asyncio.sleep(0.1)
    await asyncio.sleep(0.2)
    assert count() == BURST


async def test_late_deliveries_move_no_polled_state_back(hooked: tuple[World, str]) -> None:
    """Polling saw queuing, then agent; the callbacks of both come late (a retry, a delay): the
    state does not go back to queuing, and the change to agent is published once."""
    w, _ = hooked
    sid = await w.admin.desk_session(state="chatbot")
    await _events(w, sid, 2)
    await w.probe.request("desk/watch", {"session_id": sid, "interval": 0.1})
    await asyncio.sleep(0.3)
    await w.admin.call("POST", "/desk/callback", {"delay_ms": 800, "delay_count": 2})
    await w.admin.desk_state(sid, "queuing")
    await asyncio.sleep(0.3)
    await w.admin.desk_state(sid, "agent", "bob@x")
    await w.probe.wait_json(f"desk/{sid}/event", lambda e: e["type"] == "transfer_started", 5)
    await asyncio.sleep(1.2)  # both late deliveries, and the polls after them
    states = _states(w, sid)
    assert states[-1] == "agent" and "queuing" not in states[states.index("agent") :], states
    changes = [e for e in w.probe.on(f"desk/{sid}/event") if e["type"] == "state_changed"]
    assert [e["after"] for e in changes].count("agent") == 1, changes


async def test_an_answer_sent_before_the_end_does_not_bring_the_session_back(
    hooked: tuple[World, str],
) -> None:
    w, _ = hooked
    sid = await w.admin.desk_session(state="agent", agent_id="bob@x")
    await _events(w, sid, 2)
    await w.admin.fault("get_session_state", 1, latency_ms=700)  # answered after the end
    asking = asyncio.create_task(w.probe.request("desk/get_session_state", {"session_id": sid}))
    await asyncio.sleep(0.2)
    await w.admin.end_desk(sid)  # SessionEnd is delivered at once
    answer = await asking
    assert answer["status"] == "ok" and answer["data"]["state"] == "agent"  # what Tencent said
    await asyncio.sleep(0.3)
    assert _states(w, sid)[-1] == "ended", _states(w, sid)
    events = [e["type"] for e in w.probe.on(f"desk/{sid}/event")]
    assert events[events.index("session_ended") :] == ["session_ended"], events
