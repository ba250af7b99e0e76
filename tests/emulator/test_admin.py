"""The admin API: fault injection, the journal, state and reset."""

from __future__ import annotations

import asyncio
import json
import time

import httpx
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus

from bridge.emulator import Emulator
from tests.emulator.helpers import (
    channel_url,
    code,
    collect,
    desk,
    drive,
    is_status,
    ivh,
    open_channel,
    started_session,
)


async def _fault(client: httpx.AsyncClient, **spec: object) -> None:
    response = await client.post("/emulator/faults", json=spec)
    assert response.status_code == 201, response.text


async def test_latency_delays_the_answer(emu: Emulator, client: httpx.AsyncClient) -> None:
    await _fault(client, path="listsessionofuin", count=1, latency_ms=200)
    started = time.perf_counter()
    assert code(await ivh(client, emu, "listsessionofuin")) == 0
    assert time.perf_counter() - started >= 0.2
    started = time.perf_counter()
    await ivh(client, emu, "listsessionofuin")
    assert time.perf_counter() - started < 0.2


async def test_http_status_fault(emu: Emulator, client: httpx.AsyncClient) -> None:
    await _fault(client, path="statsession", count=2, http_status=502)
    for _ in range(2):
        answer = await ivh(client, emu, "statsession", SessionId="x")
        assert answer["_status"] == 502
    assert (await ivh(client, emu, "statsession", SessionId="x"))["_status"] == 200


async def test_http_status_fault_body_is_small_text(client: httpx.AsyncClient) -> None:
    await _fault(client, path="get_session_state", http_status=503)
    response = await client.post("/v4/desk_http_svc/get_session_state", content=b"{}")
    assert response.status_code == 503
    assert response.headers["content-type"].startswith("text/plain")


async def test_error_code_faults_use_each_api_envelope(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    await _fault(client, path="statsession", error_code=-101000, error_message="boom")
    answer = await ivh(client, emu, "statsession", SessionId="x")
    assert (answer["_status"], answer["Header"]["Code"]) == (200, -101000)
    assert answer["Header"]["Message"] == "boom"
    await _fault(client, path="send_stream_msg", error_code=60007)
    answer = await desk(client, emu, "send_stream_msg", {})
    assert (answer["ActionStatus"], answer["ErrorCode"]) == ("FAIL", 60007)


async def test_drop_fault_closes_without_answer(emu: Emulator, client: httpx.AsyncClient) -> None:
    await _fault(client, path="startsession", drop=True)
    with pytest.raises(httpx.TransportError):
        await ivh(client, emu, "startsession", SessionId="x")
    assert code(await ivh(client, emu, "startsession", SessionId="x")) == 110018


async def test_websocket_faults(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    await _fault(client, path="commandchannel", count=1)
    await _fault(client, path="commandchannel", count=1, error_code=110021)
    with pytest.raises(InvalidStatus) as refused:
        await connect(channel_url(emu, sid), open_timeout=2)
    assert refused.value.response.status_code == 503
    with pytest.raises(InvalidStatus) as refused:
        await connect(channel_url(emu, sid), open_timeout=2)
    assert refused.value.response.status_code == 403
    assert json.loads(refused.value.response.body or b"")["Header"]["Code"] == 110021
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_TEXT", "r", Text="works", ChatCommand="NotUseChat"))
        await collect(ws, is_status("TextOver"))


async def test_websocket_drop_fault(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    await _fault(client, path="commandchannel", drop=True)
    with pytest.raises((ConnectionClosed, InvalidHandshake, OSError)):
        async with await connect(channel_url(emu, sid), open_timeout=2) as ws:
            await asyncio.wait_for(ws.recv(), 2)
    assert emu.state.ivh.live[sid].connects == 0


async def test_faults_can_be_listed_and_cleared(client: httpx.AsyncClient) -> None:
    await _fault(client, path="statsession", count=3, http_status=500)
    listed = (await client.get("/emulator/faults")).json()["faults"]
    assert [(f["path"], f["remaining"]) for f in listed] == [("statsession", 3)]
    assert (await client.delete("/emulator/faults")).json() == {"cleared": 1}
    assert (await client.get("/emulator/faults")).json() == {"faults": []}


@pytest.mark.parametrize(
    "spec",
    [{}, {"path": ""}, {"path": "x", "count": 0}, {"path": "x", "http_status": 99}, {"x": 1}],
)
async def test_bad_fault_specs_are_400(client: httpx.AsyncClient, spec: object) -> None:
    assert (await client.post("/emulator/faults", json=spec)).status_code == 400


async def test_journal_records_calls_and_frames(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_TEXT", "j1", Text="hi", ChatCommand="NotUseChat"))
        await collect(ws, is_status("TextOver"))
    await desk(client, emu, "get_session_state", {"SessionId": "x"})
    await asyncio.sleep(0.05)  # the server notes the close after the client's close completes
    entries = (await client.get("/emulator/journal")).json()["entries"]
    kinds = {e["kind"] for e in entries}
    assert kinds == {"http", "ws_open", "ws_in", "ws_out", "ws_close"}
    text = json.dumps(entries)
    assert emu.config.access_token not in text and emu.config.secret_key not in text
    assert all("signature" not in (e.get("query") or {}) for e in entries)
    assert all("usersig" not in (e.get("query") or {}) for e in entries)
    stat = [e for e in entries if e["kind"] == "http" and "startsession" in e["path"]]
    assert (stat[0]["status"], stat[0]["code"], stat[0]["session_id"]) == (200, 0, sid)
    desk_entry = next(e for e in entries if "get_session_state" in e["path"])
    assert (desk_entry["code"], desk_entry["body"]) == (141005, {"SessionId": "x"})
    ws_in = next(e for e in entries if e["kind"] == "ws_in")
    assert ws_in["frame"]["Payload"]["ReqId"] == "j1"


async def test_journal_filters_and_clear(emu: Emulator, client: httpx.AsyncClient) -> None:
    await ivh(client, emu, "listsessionofuin")
    await ivh(client, emu, "statsession", SessionId="x")
    found = (await client.get("/emulator/journal", params={"path": "statsession"})).json()
    assert [e["path"].rsplit("/", 1)[1] for e in found["entries"]] == ["statsession"]
    since = found["next_index"]
    await ivh(client, emu, "listsessionofuin")
    newer = (await client.get("/emulator/journal", params={"since": since})).json()["entries"]
    assert len(newer) == 1 and newer[0]["index"] == since
    assert (await client.get("/emulator/journal", params={"since": "x"})).status_code == 400
    await client.delete("/emulator/journal")
    assert (await client.get("/emulator/journal")).json()["entries"] == []


def test_journal_is_bounded() -> None:
    from bridge.emulator.journal import Journal

    journal = Journal(max_entries=10, max_bytes=10_000)
    for n in range(100):
        journal.record("http", size=100, path=f"/p{n}")
    assert len(journal) == 10
    assert journal.entries()[0]["path"] == "/p90"
    for n in range(5):
        journal.record("http", size=5_000, path=f"/big{n}")
    assert len(journal) <= 2


def test_journal_entries_are_nothing_the_collector_tracks() -> None:
    """Not even for a while: an object per entry counted towards every young collection (one
    per 50,000 entries), which walked them all: 15-25 ms pauses under load."""
    import gc

    from bridge.emulator.journal import Journal

    journal = Journal(max_entries=1000)
    gc.collect()
    gc.disable()
    try:
        before = len(gc.get_objects())
        for n in range(2000):
            body = {"SessionId": f"s{n}"}
            journal.record("http", size=10, path="/p", query={"a": "b"}, body=body)
            journal.record("ws_out", size=10, path="/ws", session_id=f"s{n}", frame=body)
        assert len(gc.get_objects()) - before < 50
    finally:
        gc.enable()
    assert len(journal) == 1000


def test_a_record_that_cannot_be_written_leaves_the_journal_whole() -> None:
    from bridge.emulator.journal import Journal

    journal = Journal()
    journal.record("http", path="/a")
    loop: list[object] = []
    loop.append(loop)
    with pytest.raises(ValueError, match="Circular"):
        journal.record("http", path="/b", body=loop)
    journal.record("http", path="/c")
    assert [e["path"] for e in journal.entries()] == ["/a", "/c"]


async def test_journal_notes_faults(emu: Emulator, client: httpx.AsyncClient) -> None:
    await _fault(client, path="statsession", http_status=500)
    await ivh(client, emu, "statsession", SessionId="x")
    entry = (await client.get("/emulator/journal")).json()["entries"][-1]
    assert (entry["status"], entry["fault"]) == (500, 1)


async def test_state_and_reset(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    await client.post("/emulator/desk/sessions", json={"session_id": "d1"})
    async with await open_channel(emu, sid) as ws:
        state = (await client.get("/emulator/state")).json()
        assert [s["session_id"] for s in state["ivh"]["sessions"]] == [sid]
        assert state["ivh"]["sessions"][0]["connected"] is True
        assert state["sockets"] == [sid]
        assert [s["session_id"] for s in state["desk"]["sessions"]] == ["d1"]
        assert "access_token" not in state["config"] and "secret_key" not in state["config"]
        assert (await client.post("/emulator/reset")).json() == {"reset": True}
        await asyncio.wait_for(ws.wait_closed(), 2)
    state = (await client.get("/emulator/state")).json()
    assert state["ivh"]["sessions"] == state["desk"]["sessions"] == state["sockets"] == []


async def test_admin_status_moves(emu: Emulator, client: httpx.AsyncClient) -> None:
    body = {"count": 2, "status": 3, "started": False, "user_id_prefix": "bench-"}
    created = (await client.post("/emulator/ivh/sessions", json=body)).json()
    assert created["user_ids"] == ["bench-1", "bench-2"]
    sid = created["session_ids"][0]
    url = f"/emulator/ivh/sessions/{sid}/status"
    assert (await client.post(url, json={"status": 3})).json()["status"] == 3
    await asyncio.sleep(0.1)  # frozen: no automatic move to 1 after an admin status 3
    assert (await ivh(client, emu, "statsession", SessionId=sid))["Payload"]["SessionStatus"] == 3
    failed = (await client.post(url, json={"status": 4})).json()
    assert (failed["status"], failed["error_code"]) == (4, -111004)
    assert (await client.post(url, json={"status": 2})).status_code == 200
    assert (await client.post(url, json={"status": 1})).status_code == 409
    assert (await client.post(url, json={"status": 9})).status_code == 400
    assert (
        await client.post("/emulator/ivh/sessions/nope/status", json={"status": 1})
    ).status_code == 404
    bad = await client.post("/emulator/ivh/sessions", content=b"{nope")
    assert bad.status_code == 400


async def test_stats_count_calls_and_sockets_per_session(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await started_session(client, emu)
    first = await open_channel(emu, sid)
    with pytest.raises(InvalidStatus):  # a second socket while one is open: 409
        await open_channel(emu, sid)
    await first.close()
    await asyncio.sleep(0.1)
    stats = (await client.get("/emulator/stats")).json()
    assert stats["sockets"][sid] == {"opened": 1, "refused_busy": 1, "closed": 1}
    assert stats["calls"]["/v2/ivh/sessionmanager/sessionmanagerservice/startsession"] == 1
