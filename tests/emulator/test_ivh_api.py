"""The IVH session-manager API: envelopes, lifecycle and error codes (docs/protocol.md A.1, A.3,
A.7)."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest

from bridge.emulator import Emulator
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import (
    IVH,
    code,
    create_session,
    ivh,
    signed_query,
    started_session,
    wait_status,
)


async def test_session_prepares_then_runs(emu: Emulator, client: httpx.AsyncClient) -> None:
    created = await ivh(
        client, emu, "createsession", VirtualmanProjectId="p", UserId="u", Protocol="rtmp"
    )
    assert code(created) == 0
    assert created["Payload"]["SessionStatus"] == 3
    assert created["Header"]["RequestID"]
    sid = created["Payload"]["SessionId"]
    stat = await wait_status(client, emu, sid, 1)
    assert set(stat["Payload"]) == {
        "ReqId",
        "SessionStatus",
        "PlayStreamAddr",
        "SpeakStatus",
        "IsSessionStarted",
        "ErrorCode",
        "ErrorMessage",
    }
    assert stat["Payload"]["IsSessionStarted"] is False


async def test_zero_prepare_delay_is_ready_at_once(make_emulator: EmulatorFactory) -> None:
    async with make_emulator(prepare_delay=0) as emu, httpx.AsyncClient(base_url=emu.base_url) as c:
        created = await ivh(
            c, emu, "createsession", VirtualmanProjectId="p", UserId="u", Protocol="trtc"
        )
        assert created["Payload"]["SessionStatus"] == 1
        assert created["Payload"]["PlayStreamAddr"] == ""


async def test_request_id_is_echoed(emu: Emulator, client: httpx.AsyncClient) -> None:
    body = {"Header": {"RequestID": "trace-7"}, "Payload": {"ReqId": "r"}}
    response = await client.post(f"{IVH}listsessionofuin?{signed_query(emu)}", json=body)
    assert response.json()["Header"] == {"Code": 0, "Message": "", "RequestID": "trace-7"}


async def test_start_before_ready_is_110014(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await create_session(client, emu)
    assert code(await ivh(client, emu, "startsession", SessionId=sid)) == 110014


async def test_start_close_and_after(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    stat = await ivh(client, emu, "statsession", SessionId=sid)
    assert stat["Payload"]["IsSessionStarted"] is True
    assert code(await ivh(client, emu, "closesession", SessionId=sid)) == 0
    stat = await ivh(client, emu, "statsession", SessionId=sid)
    assert code(stat) == 0
    assert stat["Payload"]["SessionStatus"] == 2
    assert stat["Payload"]["IsSessionStarted"] is True  # A.3: stays true once started
    assert code(await ivh(client, emu, "startsession", SessionId=sid)) == 110013
    assert code(await ivh(client, emu, "closesession", SessionId=sid)) == 110013


async def test_unknown_session_is_110018(emu: Emulator, client: httpx.AsyncClient) -> None:
    for api in ("statsession", "startsession", "closesession"):
        assert code(await ivh(client, emu, api, SessionId="no-such")) == 110018


async def test_same_user_id_replaces_the_session(emu: Emulator, client: httpx.AsyncClient) -> None:
    first = await create_session(client, emu, "kiosk")
    second = await create_session(client, emu, "kiosk")
    assert first != second
    stat = await ivh(client, emu, "statsession", SessionId=first)
    assert stat["Payload"]["SessionStatus"] == 2
    assert stat["Payload"]["ErrorCode"] == 110022
    assert code(await ivh(client, emu, "startsession", SessionId=first)) == 110022
    assert code(await ivh(client, emu, "closesession", SessionId=first)) == 110022
    listed = await ivh(client, emu, "listsessionofuin")
    assert [s["SessionId"] for s in listed["Payload"]["Sessions"]] == [second]


async def test_lists_show_live_sessions_only(emu: Emulator, client: httpx.AsyncClient) -> None:
    a = await started_session(client, emu, "a", DriverType=3)
    b = await create_session(client, emu, "b", VirtualmanProjectId="other")
    c = await create_session(client, emu, "c")
    await ivh(client, emu, "closesession", SessionId=c)
    uin = (await ivh(client, emu, "listsessionofuin"))["Payload"]["Sessions"]
    assert {s["SessionId"] for s in uin} == {a, b}
    entry = next(s for s in uin if s["SessionId"] == a)
    assert entry["DriverType"] == 3
    assert entry["IsSessionStarted"] is True
    assert entry["UserId"] == "a"
    assert {"VirtualmanType", "CreateType", "VirtualmanKey", "AssetVirtualmanKey"} <= set(entry)
    project = await ivh(client, emu, "listsessionofprojectid", VirtualmanProjectId="proj-1")
    sessions = project["Payload"]["Sessions"]
    assert [(s["SessionId"], s["DriverType"]) for s in sessions] == [(a, "3")]


async def test_create_by_asset(emu: Emulator, client: httpx.AsyncClient) -> None:
    created = await ivh(
        client, emu, "createsessionbyasset", AssetVirtualmanKey="ak", UserId="u", Protocol="webrtc"
    )
    assert code(created) == 0
    listed = (await ivh(client, emu, "listsessionofuin"))["Payload"]["Sessions"]
    assert listed[0]["CreateType"] == 1
    assert listed[0]["AssetVirtualmanKey"] == "ak"


@pytest.mark.parametrize(
    "payload",
    [
        {"UserId": "u", "Protocol": "rtmp"},
        {"VirtualmanProjectId": "p", "Protocol": "rtmp"},
        {"VirtualmanProjectId": "p", "UserId": "u", "Protocol": "RTMP"},
        {"VirtualmanProjectId": "p", "UserId": "u", "Protocol": "rtmp", "DriverType": 2},
        {"VirtualmanProjectId": "p", "UserId": "u", "Protocol": "rtmp", "DriverType": True},
        {"VirtualmanProjectId": "p", "UserId": 5, "Protocol": "rtmp"},
        {"VirtualmanProjectId": "p", "UserId": "u", "Protocol": "rtmp", "SessionId": "mine"},
        {"VirtualmanProjectId": "p", "UserId": "u", "Protocol": "rtmp", "StreamMaxInterval": 100},
        {"VirtualmanProjectId": "p", "UserId": "u", "Protocol": "rtmp", "ProtocolOption": []},
    ],
)
async def test_invalid_create_payloads_are_100001(
    emu: Emulator, client: httpx.AsyncClient, payload: dict[str, object]
) -> None:
    answer = await ivh(client, emu, "createsession", **payload)
    assert answer["_status"] == 200
    assert code(answer) == 100001


async def test_driver_type_as_string_is_accepted(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await create_session(client, emu, DriverType="3")
    assert emu.state.ivh.live[sid].driver_type == 3


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[]", b'{"Header":{}}', b'{"Payload":[]}', b'{"Payload":{}}', b"[" * 100_000],
)
async def test_malformed_bodies_are_100001(
    emu: Emulator, client: httpx.AsyncClient, body: bytes
) -> None:
    url = f"{IVH}statsession?{signed_query(emu)}"
    response = await client.post(url, content=body)
    assert response.status_code == 200
    assert code(response.json()) == 100001


async def test_unknown_api_is_404(emu: Emulator, client: httpx.AsyncClient) -> None:
    response = await client.post(f"{IVH}nosuchapi?{signed_query(emu)}", json={"Payload": {}})
    assert response.status_code == 404
    assert code(response.json()) == 100001


async def test_idle_sessions_are_closed(make_emulator: EmulatorFactory) -> None:
    async with (
        make_emulator(session_idle_timeout=0.2) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await create_session(client, emu)
        stat = await wait_status(client, emu, sid, 2, timeout=3)
        assert stat["Payload"]["ErrorCode"] == 110013
        listed = await ivh(client, emu, "listsessionofuin")
        assert listed["Payload"]["Sessions"] == []


async def test_closed_sessions_are_forgotten_after_retention(
    make_emulator: EmulatorFactory,
) -> None:
    async with (
        make_emulator(closed_retention=0.1) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await create_session(client, emu)
        await ivh(client, emu, "closesession", SessionId=sid)
        async with asyncio.timeout(3):
            while code(await ivh(client, emu, "statsession", SessionId=sid)) != 110018:
                await asyncio.sleep(0.02)


async def test_concurrency_limit_is_100008(make_emulator: EmulatorFactory) -> None:
    async with (
        make_emulator(max_sessions=2) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        await create_session(client, emu, "a")
        await create_session(client, emu, "b")
        answer = await ivh(
            client, emu, "createsession", VirtualmanProjectId="p", UserId="c", Protocol="rtmp"
        )
        assert code(answer) == 100008


async def test_ten_thousand_sessions_list_quickly(emu: Emulator, client: httpx.AsyncClient) -> None:
    started = time.perf_counter()
    response = await client.post("/emulator/ivh/sessions", json={"count": 10_000})
    assert response.status_code == 200
    assert len(set(response.json()["session_ids"])) == 10_000
    listed = await ivh(client, emu, "listsessionofuin")
    assert len(listed["Payload"]["Sessions"]) == 10_000
    assert time.perf_counter() - started < 5
