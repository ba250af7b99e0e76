"""The Desk REST API: session state spellings and streaming messages (docs/protocol.md B.3-B.5)."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from bridge.emulator import Emulator
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import desk
from tests.support.garbage import cyclic_garbage, named


async def _session(client: httpx.AsyncClient, **body: Any) -> str:
    response = await client.post("/emulator/desk/sessions", json=body)
    assert response.status_code == 201, response.text
    sid: str = response.json()["session_id"]
    return sid


async def test_state_by_session_id(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await _session(client, session_id="b0f4ca12-4850-4218-a284-efe679a87066")
    answer = await desk(client, emu, "get_session_state", {"SessionId": sid})
    assert answer == {
        "ActionStatus": "OK",
        "ErrorInfo": "",
        "ErrorCode": 0,
        "SessionId": sid,
        "CurrentState": "Chatbot",
    }


async def test_state_by_user_and_agent(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await _session(client, client_user_id="user1", state="waiting_for_agent")
    body = {"ClientUserId": "user1", "CustomerServiceId": "@customer_service_account"}
    answer = await desk(client, emu, "get_session_state", body)
    assert answer["SessionId"] == sid
    assert answer["CurrentState"] == "WaitingForAgentAnswering"
    assert answer["AgentId"]
    await client.post(
        f"/emulator/desk/sessions/{sid}/state", json={"state": "agent", "agent_id": "a@x"}
    )
    answer = await desk(client, emu, "get_session_state", {"SessionId": sid})
    assert (answer["CurrentState"], answer["AgentId"]) == ("Agent", "a@x")


@pytest.mark.parametrize(
    ("spelling", "expected"),
    [("zh", ["NotInSession", "Queueing"]), ("en", ["Not in session", "Queuing"])],
)
async def test_spellings(
    make_emulator: EmulatorFactory, spelling: str, expected: list[str]
) -> None:
    async with (
        make_emulator(desk_spelling=spelling) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await _session(client, state="not_in_session")
        seen = [(await desk(client, emu, "get_session_state", {"SessionId": sid}))["CurrentState"]]
        await client.post(f"/emulator/desk/sessions/{sid}/state", json={"state": "queuing"})
        seen.append(
            (await desk(client, emu, "get_session_state", {"SessionId": sid}))["CurrentState"]
        )
    assert seen == expected


async def test_mixed_spelling_alternates(make_emulator: EmulatorFactory) -> None:
    async with (
        make_emulator(desk_spelling="mixed") as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await _session(client, state="queuing")
        seen = {
            (await desk(client, emu, "get_session_state", {"SessionId": sid}))["CurrentState"]
            for _ in range(4)
        }
    assert seen == {"Queueing", "Queuing"}


async def test_raw_state_is_passed_through(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await _session(client)
    await client.post(f"/emulator/desk/sessions/{sid}/state", json={"raw_state": "Transferring"})
    answer = await desk(client, emu, "get_session_state", {"SessionId": sid})
    assert answer["CurrentState"] == "Transferring"


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ({}, 141004),
        ({"SessionId": ""}, 141004),
        ({"SessionId": 7}, 141004),
        ({"ClientUserId": "u"}, 141004),
        ({"SessionId": "unknown"}, 141005),
        ({"ClientUserId": "nobody", "CustomerServiceId": "@cs"}, 141005),
        (b"{bad json", 60003),
        (b"[]", 60003),
    ],
)
async def test_state_errors(
    emu: Emulator, client: httpx.AsyncClient, body: Any, expected: int
) -> None:
    answer = await desk(client, emu, "get_session_state", body)
    assert (answer["ActionStatus"], answer["ErrorCode"]) == ("FAIL", expected)
    assert answer["ErrorInfo"]


async def test_ended_session_is_141005(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await _session(client)
    # B.5: end_session ends "a session that was transferred to a human"
    assert (await desk(client, emu, "end_session", {"SessionId": sid}))["ErrorCode"] == 141004
    assert (await desk(client, emu, "transfer_to_human", {"SessionId": sid}))["ErrorCode"] == 0
    assert (await desk(client, emu, "end_session", {"SessionId": sid}))["ErrorCode"] == 0
    assert (await desk(client, emu, "get_session_state", {"SessionId": sid}))["ErrorCode"] == 141005
    assert (await desk(client, emu, "end_session", {"SessionId": sid}))["ErrorCode"] == 141005
    other = await _session(client)
    assert (await client.delete(f"/emulator/desk/sessions/{other}")).status_code == 200
    answer = await desk(client, emu, "send_stream_msg", {"SessionId": other, "Chunk": "x"})
    assert answer["ErrorCode"] == 141005


async def test_stream_message_lifecycle(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await _session(client)
    first = await desk(client, emu, "send_stream_msg", {"SessionId": sid, "Chunk": "Hello, "})
    key = first["MsgKey"]
    assert first["ErrorCode"] == 0 and key
    second = await desk(
        client, emu, "send_stream_msg", {"SessionId": sid, "Chunk": "this is ", "MsgKey": key}
    )
    assert second == {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0}
    last = {"SessionId": sid, "Chunk": "Tencent Cloud.", "MsgKey": key, "Finish": 1}
    assert (await desk(client, emu, "send_stream_msg", last))["ErrorCode"] == 0
    again = {"SessionId": sid, "Chunk": "more", "MsgKey": key}
    assert (await desk(client, emu, "send_stream_msg", again))["ErrorCode"] == 141004
    fresh = await desk(client, emu, "send_stream_msg", {"SessionId": sid, "Chunk": "Next"})
    assert fresh["MsgKey"] != key
    recorded = (await client.get(f"/emulator/desk/sessions/{sid}/messages")).json()["messages"]
    assert recorded[0]["text"] == "Hello, this is Tencent Cloud."
    assert (recorded[0]["calls"], recorded[0]["finished"]) == (3, True)
    assert recorded[0]["chunks"] == ["Hello, ", "this is ", "Tencent Cloud."]
    assert (recorded[1]["finished"], recorded[1]["msg_key"]) == (False, fresh["MsgKey"])


@pytest.mark.parametrize(
    "body",
    [
        {"Chunk": "x"},
        {"SessionId": "S"},
        {"SessionId": "S", "Chunk": 5},
        {"SessionId": "S", "Chunk": "x", "MsgKey": "unknown"},
        {"SessionId": "S", "Chunk": "x", "Finish": 2},
        {"SessionId": "S", "Chunk": "x", "Finish": "1"},
        {"SessionId": "S", "Chunk": "x", "CloudCustomData": {}},
    ],
)
async def test_stream_message_errors(
    emu: Emulator, client: httpx.AsyncClient, body: dict[str, Any]
) -> None:
    sid = await _session(client)
    real = json.loads(json.dumps(body).replace('"S"', json.dumps(sid)))
    assert (await desk(client, emu, "send_stream_msg", real))["ErrorCode"] == 141004


async def test_msg_key_of_another_session_is_refused(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    a, b = await _session(client), await _session(client)
    key = (await desk(client, emu, "send_stream_msg", {"SessionId": a, "Chunk": "x"}))["MsgKey"]
    other = {"SessionId": b, "Chunk": "y", "MsgKey": key}
    assert (await desk(client, emu, "send_stream_msg", other))["ErrorCode"] == 141004


async def test_body_over_12_kb_is_93000(emu: Emulator, client: httpx.AsyncClient) -> None:
    """ "Should not exceed 12k": the emulator takes the strict reading, 12,000 bytes."""
    sid = await _session(client)
    body = {"SessionId": sid, "Chunk": ""}
    overhead = len(json.dumps(body))
    fits = {"SessionId": sid, "Chunk": "x" * (12000 - overhead)}
    assert (await desk(client, emu, "send_stream_msg", fits))["ErrorCode"] == 0
    too_big = {"SessionId": sid, "Chunk": "x" * (12001 - overhead)}
    assert (await desk(client, emu, "send_stream_msg", too_big))["ErrorCode"] == 93000


async def test_bad_json_stream_is_90001(emu: Emulator, client: httpx.AsyncClient) -> None:
    assert (await desk(client, emu, "send_stream_msg", b"{"))["ErrorCode"] == 90001


async def test_unknown_command(emu: Emulator, client: httpx.AsyncClient) -> None:
    assert (await desk(client, emu, "teleport", {}))["ErrorCode"] == 60009


async def test_admin_desk_errors(client: httpx.AsyncClient) -> None:
    await _session(client, session_id="dup")
    assert (
        await client.post("/emulator/desk/sessions", json={"session_id": "dup"})
    ).status_code == 409
    assert (
        await client.post("/emulator/desk/sessions", json={"state": "dancing"})
    ).status_code == 400
    assert (
        await client.post("/emulator/desk/sessions/none/state", json={"state": "agent"})
    ).status_code == 404
    assert (await client.delete("/emulator/desk/sessions/none")).status_code == 404
    assert (await client.get("/emulator/desk/sessions/none/messages")).status_code == 404


async def test_a_call_leaves_no_reference_cycle_in_the_server(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    """uvicorn's per-request object held in the scope it holds: one cycle per call, which the
    collector freed in 60 ms pauses under load."""
    sid = await _session(client)
    with cyclic_garbage() as garbage:
        for _ in range(5):
            await desk(client, emu, "get_session_state", {"SessionId": sid})
    assert named(garbage, "RequestResponseCycle") == []


async def test_transfer_to_human_moves_the_session_as_the_admin_api_says(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await _session(client)
    plan = {"outcome": "waiting_for_agent", "agent_id": "carol@x", "after_ms": 100}
    assert (await client.post("/emulator/desk/handover", json=plan)).status_code == 200
    body = {"SessionId": sid, "Priority": 9, "AgentIdList": ["dave@x"], "DisableQueuing": 0}
    answer = await desk(client, emu, "transfer_to_human", body)
    assert answer["ErrorCode"] == 0 and answer["AgentId"] == ""  # still queued when answered
    state = await desk(client, emu, "get_session_state", {"SessionId": sid})
    assert state["CurrentState"] == "Queueing"
    await asyncio.sleep(0.3)
    state = await desk(client, emu, "get_session_state", {"SessionId": sid})
    assert (state["CurrentState"], state["AgentId"]) == ("WaitingForAgentAnswering", "dave@x")
    again = await desk(client, emu, "transfer_to_human", {"SessionId": sid})
    assert again["ErrorCode"] == 141004  # already transferred


async def test_transfer_fields_and_sessions_are_checked(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await _session(client)
    for bad in ({"Priority": 10}, {"SendTipIfNoAgentOnline": 2}, {"AgentIdList": "a"}, {}):
        body = {"SessionId": sid, **bad} if bad else {}
        assert (await desk(client, emu, "transfer_to_human", body))["ErrorCode"] == 141004, bad
    gone = await desk(client, emu, "transfer_to_human", {"SessionId": "no-such"})
    assert gone["ErrorCode"] == 141005


async def test_no_agent_online_ends_the_session_when_asked(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    await client.post("/emulator/desk/handover", json={"outcome": "no_agent"})
    back, ends = await _session(client), await _session(client)
    await desk(client, emu, "transfer_to_human", {"SessionId": back})
    state = await desk(client, emu, "get_session_state", {"SessionId": back})
    assert state["CurrentState"] == "Chatbot"
    body = {"SessionId": ends, "EndSessionWhenNoMemberOnline": 1}
    await desk(client, emu, "transfer_to_human", body)
    gone = await desk(client, emu, "get_session_state", {"SessionId": ends})
    assert gone["ErrorCode"] == 141005


async def test_chat_history_has_streamed_and_added_messages(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await _session(client)
    await client.post(f"/emulator/desk/sessions/{sid}/chat", json={"role": "user", "text": "q"})
    await asyncio.sleep(0.002)
    await desk(client, emu, "send_stream_msg", {"SessionId": sid, "Chunk": "a", "Finish": 1})
    await asyncio.sleep(0.002)
    await client.post(f"/emulator/desk/sessions/{sid}/chat", json={"role": "agent", "text": "z"})
    newest = await desk(client, emu, "describe_chat_messages", {"SessionId": sid})
    assert newest["TotalCount"] == 3
    roles = [
        (m["FromAccountRole"], m["MsgBody"][0]["MsgContent"]["Text"]) for m in newest["Messages"]
    ]
    assert roles == [(2, "z"), (3, "a"), (1, "q")]
    page = {"SessionId": sid, "Order": 1, "Limit": 1, "Offset": 1}
    oldest = await desk(client, emu, "describe_chat_messages", page)
    assert [m["MsgBody"][0]["MsgContent"]["Text"] for m in oldest["Messages"]] == ["a"]
    assert isinstance(oldest["Messages"][0]["Timestamp"], int)
    for bad in ({"Limit": 0}, {"Limit": 101}, {"Order": 3}, {"Offset": -1}):
        answer = await desk(client, emu, "describe_chat_messages", {"SessionId": sid, **bad})
        assert answer["ErrorCode"] == 141004, bad
    gone = await desk(client, emu, "describe_chat_messages", {"SessionId": "no-such"})
    assert gone["ErrorCode"] == 141005
