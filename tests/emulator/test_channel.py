"""The command channel (docs/protocol.md A.4-A.6): handshake, one socket, drives, replay, idle
close."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import time
from collections.abc import AsyncIterator

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from bridge.emulator import Emulator
from tests.emulator.conftest import EmulatorFactory
from tests.emulator.helpers import (
    channel_url,
    collect,
    create_session,
    drive,
    is_status,
    ivh,
    open_channel,
    started_session,
    statuses,
    wait_status,
)

Refusal = tuple[int, int]


async def _refusal(url: str) -> Refusal:
    with pytest.raises(InvalidStatus) as info:
        async with connect(url, open_timeout=2):
            pass
    body = json.loads(info.value.response.body or b"{}")
    return info.value.response.status_code, body["Header"]["Code"]


async def test_bad_signature_is_refused(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    assert await _refusal(channel_url(emu, sid, appkey="other")) == (401, 100005)
    stale = str(int(time.time()) - 400)
    assert await _refusal(channel_url(emu, sid, timestamp=stale)) == (401, 100005)
    no_requestid = channel_url(emu, sid).replace(f"requestid={sid}&", "")
    assert await _refusal(no_requestid) == (401, 100005)


async def test_session_state_refusals(emu: Emulator, client: httpx.AsyncClient) -> None:
    assert await _refusal(channel_url(emu, "unknown")) == (404, 110018)
    sid = await create_session(client, emu, "a")
    await wait_status(client, emu, sid, 1)
    assert await _refusal(channel_url(emu, sid)) == (403, 110016)
    await ivh(client, emu, "closesession", SessionId=sid)
    assert await _refusal(channel_url(emu, sid)) == (403, 110013)
    old = await started_session(client, emu, "b")
    await create_session(client, emu, "b")
    assert await _refusal(channel_url(emu, old)) == (403, 110022)


async def test_one_socket_per_session(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as first:
        assert await _refusal(channel_url(emu, sid)) == (409, 110015)
        await first.send(drive(sid, "SEND_TEXT", "r1", Text="hi", ChatCommand="NotUseChat"))
        frames = await collect(first, is_status("TextOver"))
        assert statuses(frames) == ["WaitingTextStart", "TextStart", "TextOver"]


async def test_send_text_with_chat_emits_llm_frames(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_TEXT", "q1", Text="what time is it"))
        frames = await collect(ws, is_status("TextOver"))
    types = [f["Type"] for f in frames]
    assert types == [3, 4, 4, 3, 3]
    llm = [f for f in frames if f["Type"] == 4]
    assert [f["Seq"] for f in llm] == [1, 2]
    assert [f["Final"] for f in llm] == [False, True]
    assert "what time is it" in llm[0]["Text"]
    assert all(f["ContentType"] == 1 and f["TtsSupport"] is True for f in llm)
    assert all(f["ReqId"] == "q1" and f["SessionId"] == sid for f in frames)


async def test_header_of_downstream_frames(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_TEXT", "h1", Text="x", ChatCommand="NotUseChat"))
        frame = json.loads(await ws.recv())
    assert frame["Header"] == {"Code": 0, "Message": "", "RequestID": "h1"}


@contextlib.asynccontextmanager
async def speaking(
    make_emulator: EmulatorFactory,
) -> AsyncIterator[tuple[httpx.AsyncClient, Emulator, str, ClientConnection]]:
    """A started session's open channel, on an emulator that speaks in 50 ms steps."""
    async with (
        make_emulator(speak_delay=0.05) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await started_session(client, emu)
        async with await open_channel(emu, sid) as ws:
            yield client, emu, sid, ws


async def test_new_text_interrupts_current_speech(make_emulator: EmulatorFactory) -> None:
    async with speaking(make_emulator) as (_, _, sid, ws):
        await ws.send(drive(sid, "SEND_TEXT", "old", Text="a" * 200, ChatCommand="NotUseChat"))
        await collect(ws, is_status("TextStart", "old"))
        await ws.send(drive(sid, "SEND_TEXT", "new", Text="b", ChatCommand="NotUseChat"))
        frames = await collect(ws, is_status("TextOver", "new"))
    pairs = [(f["ReqId"], f["SpeakStatus"]) for f in frames]
    assert pairs == [
        ("old", "TextOver"),
        ("new", "WaitingTextStart"),
        ("new", "TextStart"),
        ("new", "TextOver"),
    ]


async def test_empty_text_interrupt_stops_speech(make_emulator: EmulatorFactory) -> None:
    async with speaking(make_emulator) as (client, emu, sid, ws):
        await ws.send(drive(sid, "SEND_TEXT", "long", Text="a" * 200, ChatCommand="NotUseChat"))
        await collect(ws, is_status("TextStart", "long"))
        await ws.send(drive(sid, "SEND_TEXT", "stop", Text="", Interrupt=True))
        frames = await collect(ws, is_status("TextOver"))
        assert frames[-1]["ReqId"] == "long"
        stat = await ivh(client, emu, "statsession", SessionId=sid)
        assert stat["Payload"]["SpeakStatus"] == "TextOver"


async def test_an_interrupt_before_text_start_is_ignored(make_emulator: EmulatorFactory) -> None:
    """A.5: send the interrupt only after TextStart; before it, the drive goes on."""
    async with speaking(make_emulator) as (_, _, sid, ws):
        await ws.send(drive(sid, "SEND_TEXT", "long", Text="a" * 40, ChatCommand="NotUseChat"))
        await ws.send(drive(sid, "SEND_TEXT", "stop", Text="", Interrupt=True))  # too early
        frames = await collect(ws, is_status("TextOver"))
    assert statuses(frames) == ["WaitingTextStart", "TextStart", "TextOver"]


@pytest.mark.parametrize(
    ("frame", "req_id"),
    [
        ("not json", ""),
        ("[1, 2]", ""),
        ('{"Payload": "x"}', ""),
        ('{"Payload": {"SessionId": "S", "Command": "SEND_TEXT", "Data": {}}}', ""),
        ('{"Payload": {"ReqId": "r", "SessionId": "S", "Command": "DANCE", "Data": {}}}', "r"),
        ('{"Payload": {"ReqId": "r", "SessionId": "other", "Command": "SEND_TEXT"}}', "r"),
        ('{"Payload": {"ReqId": "r", "SessionId": "S", "Command": "SEND_TEXT"}}', "r"),
        ('{"Payload": {"ReqId": "r", "SessionId": "S", "Command": "SEND_TEXT", "Data": {}}}', "r"),
        ('{"ReqId": "r", "SessionId": "S", "Command": "SEND_TEXT", "Data": {"Text": 1}}', "r"),
        (
            '{"Payload": {"ReqId": "r", "SessionId": "S", '
            '"Command": "SEND_HEARTBEAT", "Data": {}}}',
            "r",
        ),
    ],
)
async def test_bad_drives_answer_type_9(
    emu: Emulator, client: httpx.AsyncClient, frame: str, req_id: str
) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(frame.replace('"S"', f'"{sid}"'))
        failed = json.loads(await asyncio.wait_for(ws.recv(), 2))["Payload"]
        assert (failed["Type"], failed["ErrorCode"], failed["ReqId"]) == (9, 100001, req_id)
        assert failed["ErrorMsg"]
        await ws.send(drive(sid, "SEND_TEXT", "ok", Text="still alive", ChatCommand="NotUseChat"))
        await collect(ws, is_status("TextOver", "ok"))


async def test_text_over_4000_bytes_fails(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_TEXT", "big", Text="字" * 1334))  # 4002 bytes
        failed = json.loads(await ws.recv())["Payload"]
    assert (failed["Type"], failed["ReqId"], failed["ErrorCode"]) == (9, "big", 100001)


async def test_stream_text_speaks_clauses(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_STREAMTEXT", "s", Text="Hello there. How", Seq=1))
        await ws.send(drive(sid, "SEND_STREAMTEXT", "s", Text=" are you? Fine", Seq=2))
        await ws.send(drive(sid, "SEND_STREAMTEXT", "s", Text="", Seq=3, IsFinal=True))
        frames = await collect(ws, is_status("TextOver"))
    assert statuses(frames) == [
        "WaitingTextStart",
        "TextStart",
        *("SentenceStart", "SentenceOver") * 3,
        "TextOver",
    ]
    assert [f["Seq"] for f in frames if f["SpeakStatus"] == "SentenceOver"] == [1, 2, 3]


async def test_stream_text_rules(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_STREAMTEXT", "s", Text="One.", Seq=1))
        await collect(ws, is_status("WaitingTextStart"))
        for data in ({"Text": "x", "Seq": 1}, {"Text": "x"}, {"Text": "x" * 1001, "Seq": 5}):
            await ws.send(drive(sid, "SEND_STREAMTEXT", "s", **data))
            frames = await collect(ws, lambda p: p["Type"] == 9)
            assert frames[-1]["ReqId"] == "s"


async def test_stream_auto_finalises(emu: Emulator, client: httpx.AsyncClient) -> None:
    created = await client.post(
        "/emulator/ivh/sessions", json={"count": 1, "stream_max_interval": 100}
    )
    sid = created.json()["session_ids"][0]
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_STREAMTEXT", "s", Text="No final packet", Seq=1))
        frames = await collect(ws, is_status("TextOver"))
        assert statuses(frames)[-3:] == ["SentenceStart", "SentenceOver", "TextOver"]
        await ws.send(drive(sid, "SEND_STREAMTEXT", "s", Text="late", Seq=2))
        late = await collect(ws, lambda p: p["Type"] == 9)
        assert "finished" in late[-1]["ErrorMsg"]


async def test_stream_interrupt_needs_a_seq(make_emulator: EmulatorFactory) -> None:
    async with (
        make_emulator(speak_delay=0.05) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await started_session(client, emu)
        async with await open_channel(emu, sid) as ws:
            await ws.send(drive(sid, "SEND_STREAMTEXT", "s", Text="Speaking now. And", Seq=1))
            await collect(ws, is_status("SentenceStart"))
            await ws.send(drive(sid, "SEND_STREAMTEXT", "i1", Text="", Interrupt=True))
            with pytest.raises(TimeoutError):  # A.5: ignored without a Seq
                await collect(ws, is_status("TextOver"), timeout=0.2)
            await ws.send(drive(sid, "SEND_STREAMTEXT", "i2", Text="", Interrupt=True, Seq=1))
            frames = await collect(ws, is_status("TextOver"))
    assert frames[-1]["ReqId"] == "s"
    assert not [f for f in frames if f["Type"] == 9]


async def test_clause_mode_announces_next_sentence(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        data = {"Text": "A whole clause", "Seq": 1, "IsSentence": True, "IsFinal": True}
        await ws.send(drive(sid, "SEND_STREAMTEXT", "c", **data))
        frames = await collect(ws, is_status("TextOver"))
    assert "SentenceNext" in statuses(frames)


async def test_audio_needs_driver_type_3(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_AUDIO", "a", Audio="AAAA", Seq=1))
        failed = json.loads(await ws.recv())["Payload"]
    assert failed["Type"] == 9


PCM = base64.b64encode(bytes(5120)).decode()


async def test_audio_final_from_client(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu, DriverType=3)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_AUDIO", "a", Audio=PCM, Seq=1))
        await ws.send(drive(sid, "SEND_AUDIO", "a", Audio=PCM, Seq=2))
        await ws.send(drive(sid, "SEND_AUDIO", "a", Audio="", Seq=3, IsFinal=True))
        frames = await collect(ws, is_status("AudioOver"))
    assert statuses(frames) == ["WaitingAudioStart", "AudioStart", "AudioOver"]
    assert frames[-1]["FinalType"] == 1


async def test_a_stream_or_audio_starts_at_seq_1(emu: Emulator, client: httpx.AsyncClient) -> None:
    """A.5: Seq starts at 1, for SEND_STREAMTEXT and SEND_AUDIO alike."""
    sid = await started_session(client, emu, DriverType=3)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_STREAMTEXT", "s7", Text="Hello.", Seq=7))
        frames = await collect(ws, lambda p: p["Type"] == 9)
        assert frames[-1]["ReqId"] == "s7" and "Seq 1" in frames[-1]["ErrorMsg"]
        await ws.send(drive(sid, "SEND_AUDIO", "a2", Audio=PCM, Seq=2))
        frames = await collect(ws, lambda p: p["Type"] == 9)
        assert frames[-1]["ReqId"] == "a2" and "Seq 1" in frames[-1]["ErrorMsg"]


async def test_audio_auto_final(emu: Emulator, client: httpx.AsyncClient) -> None:
    body = {"count": 1, "driver_type": 3, "stream_max_interval": 100}
    sid = (await client.post("/emulator/ivh/sessions", json=body)).json()["session_ids"][0]
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_AUDIO", "a", Audio=PCM, Seq=1))
        frames = await collect(ws, is_status("AudioOver"))
        assert frames[-1]["FinalType"] == 2
        await ws.send(drive(sid, "SEND_AUDIO", "b", Audio="not base64!", Seq=1))
        assert json.loads(await ws.recv())["Payload"]["Type"] == 9


async def test_heartbeat_answers_nothing(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_HEARTBEAT", Text="PING"))
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(ws.recv(), 0.2)


async def test_reconnect_replays_last_three_drives(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await started_session(client, emu)
    sent: dict[str, str] = {}
    async with await open_channel(emu, sid) as ws:
        for n in range(4):
            await ws.send(drive(sid, "SEND_TEXT", f"d{n}", Text=f"n{n}", ChatCommand="NotUseChat"))
            async with asyncio.timeout(2):
                while True:
                    raw = await ws.recv()
                    if '"TextOver"' in str(raw):
                        sent[f"d{n}"] = str(raw)
                        break
    async with await open_channel(emu, sid) as again:
        replayed = [str(await asyncio.wait_for(again.recv(), 2)) for _ in range(3)]
        with pytest.raises(TimeoutError):
            await asyncio.wait_for(again.recv(), 0.1)
    assert replayed == [sent["d1"], sent["d2"], sent["d3"]]


async def test_idle_socket_is_dropped(make_emulator: EmulatorFactory) -> None:
    async with (
        make_emulator(ws_idle_timeout=0.2) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await started_session(client, emu)
        async with await open_channel(emu, sid) as ws:
            await asyncio.sleep(0.1)
            await ws.send(drive(sid, "SEND_HEARTBEAT", Text="PING"))  # resets the idle timer
            await asyncio.sleep(0.15)
            assert ws.close_code is None
            await asyncio.wait_for(ws.wait_closed(), 2)
            assert ws.close_code == 1001


async def test_only_valid_instructions_keep_the_socket_open(
    make_emulator: EmulatorFactory,
) -> None:
    """A.5: the cloud drops the socket after a while with "no heartbeat and no valid traffic":
    frames it refuses do not count."""
    async with (
        make_emulator(ws_idle_timeout=0.3) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as client,
    ):
        sid = await started_session(client, emu)
        async with await open_channel(emu, sid) as ws:
            sent = 0
            with contextlib.suppress(ConnectionClosed):
                while sent < 40:  # 2 s of refused frames, if the socket stayed open
                    await ws.send("not json")
                    sent += 1
                    await asyncio.sleep(0.05)
            await asyncio.wait_for(ws.wait_closed(), 2)
            assert ws.close_code == 1001
            assert sent < 40  # closed while the refused frames kept coming


async def test_a_binary_frame_is_refused(emu: Emulator, client: httpx.AsyncClient) -> None:
    """A.5: upstream frames are JSON text frames."""
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ws.send(drive(sid, "SEND_HEARTBEAT", Text="PING").encode())
        frames = await collect(ws, lambda p: p["Type"] == 9)
        assert "binary" in frames[-1]["ErrorMsg"]


async def test_closing_the_session_closes_the_socket(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await ivh(client, emu, "closesession", SessionId=sid)
        await asyncio.wait_for(ws.wait_closed(), 2)
        assert (ws.close_code, ws.close_reason) == (1000, "session closed (110013)")


async def test_replacing_the_session_closes_the_socket(
    emu: Emulator, client: httpx.AsyncClient
) -> None:
    sid = await started_session(client, emu, "kiosk")
    async with await open_channel(emu, sid) as ws:
        await create_session(client, emu, "kiosk")
        await asyncio.wait_for(ws.wait_closed(), 2)
        assert ws.close_reason == "session closed (110022)"


async def test_admin_push_and_drop(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    push = f"/emulator/ivh/sessions/{sid}/push"
    assert (await client.post(push, json={"frame": {"Type": 2}})).status_code == 404
    async with await open_channel(emu, sid) as ws:
        assert (await client.post(push, json={"frame": {"Type": 7, "X": 1}})).status_code == 200
        wrapped = json.loads(await ws.recv())
        assert wrapped["Payload"] == {"SessionId": sid, "Type": 7, "X": 1}
        full = {"Header": {"Code": 1}, "Payload": {"Type": 8}}
        await client.post(push, json={"frame": full})
        assert json.loads(await ws.recv()) == full
        many = await client.post("/emulator/ivh/push", json={"frame": {"Type": 5}})
        assert many.json() == {"sent": 1}
        await ws.recv()
        assert (await client.post(f"/emulator/ivh/sessions/{sid}/drop")).status_code == 200
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 2)
        assert ws.close_code == 1006
    async with await open_channel(emu, sid) as ws:  # the session survives a dropped socket
        assert emu.state.ivh.live[sid].connects == 2


async def test_admin_clean_close_with_code(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        body = {"code": 4000, "reason": "maintenance"}
        await client.post(f"/emulator/ivh/sessions/{sid}/drop", json=body)
        await asyncio.wait_for(ws.wait_closed(), 2)
        assert (ws.close_code, ws.close_reason) == (4000, "maintenance")


async def test_admin_status_2_closes_socket(emu: Emulator, client: httpx.AsyncClient) -> None:
    sid = await started_session(client, emu)
    async with await open_channel(emu, sid) as ws:
        await client.post(f"/emulator/ivh/sessions/{sid}/status", json={"status": 2})
        await asyncio.wait_for(ws.wait_closed(), 2)
    stat = await ivh(client, emu, "statsession", SessionId=sid)
    assert stat["Payload"]["SessionStatus"] == 2
