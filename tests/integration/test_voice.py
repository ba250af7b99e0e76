"""Voice drive end to end (docs/protocol.md A.5 SEND_AUDIO, docs/voice.md): real mosquitto, the
emulator over sockets, the bridge; the emulator's judge says what the cloud saw."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import os
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from bridge.cli.demo.tone import tone_pcm, tone_wav, wav_of
from tests.support.broker import Broker
from tests.support.world import World, world_of

PIECE = 3200  # 100 ms
MIC = Path(__file__).parents[2] / "examples/voice/mic.py"


@pytest.fixture
async def world(broker: Broker, base: str) -> AsyncIterator[World]:
    async with world_of(broker, base, desk={"enabled": False}) as w:
        yield w


async def voice_session(w: World, user: str, driver_type: int = 3, **extra: Any) -> str:
    reply = await w.probe.request(
        "ivh/create_session",
        {"virtualman_project_id": "p", "user_id": user, "driver_type": driver_type, **extra},
    )
    assert reply["status"] == "ok", reply
    sid = str(reply["data"]["session_id"])
    await w.probe.wait_json(f"ivh/{sid}/state", lambda s: s["status"] == "in_progress")
    assert (await w.probe.request("ivh/start_session", {"session_id": sid}))["status"] == "ok"
    await w.probe.wait_json(f"ivh/{sid}/channel", lambda c: c["state"] == "connected")
    return sid


async def play(w: World, sid: str, data: bytes, timeout: float = 15.0) -> dict[str, Any]:
    """Publish bytes on the audio topic; the response that follows."""
    start = len(w.probe.messages)
    await w.probe.publish(f"ivh/{sid}/audio", data)
    topic = f"{w.probe.base}/bridge/response/ivh/send_audio"
    found = await w.probe.wait_for(lambda m: m.topic == topic, timeout=timeout, start=start)
    return dict(found.json())


async def heard(w: World, sid: str) -> list[dict[str, Any]]:
    body = await w.admin.call("GET", f"/ivh/sessions/{sid}/audio")
    return list(body["utterances"])


def payload(entry: dict[str, Any]) -> dict[str, Any]:
    return dict((entry.get("frame") or {}).get("Payload") or {})


def first(journal: list[dict[str, Any]], **want: Any) -> int:
    """The index of the first journal entry whose payload has every field in `want`."""
    return int(
        next(e["index"] for e in journal if all(payload(e).get(k) == v for k, v in want.items()))
    )


async def frames_in(w: World, sid: str, command: str | None = None) -> list[dict[str, Any]]:
    journal = await w.admin.journal("commandchannel")
    return [
        e
        for e in journal
        if e["kind"] == "ws_in"
        and e.get("session_id") == sid
        and (command is None or payload(e).get("Command") == command)
    ]


async def speak_over(w: World, sid: str, req_id: str, status: str, timeout: float = 10) -> None:
    await w.probe.wait_json(
        f"ivh/{sid}/event",
        lambda e: e["data"].get("req_id") == req_id and e["data"].get("speak_status") == status,
        timeout=timeout,
    )


async def test_a_wav_reaches_the_cloud_exact_and_paced(world: World) -> None:
    w = world
    sid = await voice_session(w, "v-file")
    pcm = tone_pcm(3.0)
    started = time.monotonic()
    reply = await play(w, sid, wav_of(pcm))
    took = time.monotonic() - started
    assert reply["status"] == "ok", reply
    data = reply["data"]
    assert (data["packets"], data["duration_ms"], data["mode"]) == (19, 3000, "file")
    assert took > 13 * 0.12  # the reply comes when the last packet is out, after pacing
    await speak_over(w, sid, data["req_id"], "AudioOver")
    [got] = await heard(w, sid)
    assert got["req_id"] == data["req_id"]
    assert (got["bytes"], got["sha256"]) == (len(pcm), hashlib.sha256(pcm).hexdigest())
    assert (got["last_seq"], got["seq_gaps"], got["short_packets"]) == (20, 0, 0)
    assert (got["ended"], got["final_empty"], got["mode"]) == ("client", True, "file")
    assert 0.75 <= got["ratio"] <= 1, got
    assert got["ratio_min"] >= 0.75 and got["ratio_max"] <= 1, got
    assert (got["throttled"], got["stutter"]) == (0, 0)
    sent = await frames_in(w, sid, "SEND_AUDIO")
    assert {payload(e)["ReqId"] for e in sent} == {data["req_id"]}
    assert [payload(e)["Data"]["Seq"] for e in sent] == list(range(1, 21))
    statuses = [
        e["data"]["speak_status"]
        for e in w.probe.on(f"ivh/{sid}/event")
        if e["type"] == "speak_status" and e["data"]["req_id"] == data["req_id"]
    ]
    assert statuses == ["WaitingAudioStart", "AudioStart", "AudioOver"]


async def test_base64_in_json_is_the_same_file(world: World) -> None:
    w = world
    sid = await voice_session(w, "v-json")
    wav = tone_wav(1.0)
    reply = await w.probe.request(
        "ivh/send_audio", {"session_id": sid, "audio": base64.b64encode(wav).decode()}
    )
    assert reply["status"] == "ok", reply
    assert reply["data"]["packets"] == 7 and reply["data"]["duration_ms"] == 1000
    await speak_over(w, sid, reply["data"]["req_id"], "AudioOver")
    [got] = await heard(w, sid)
    assert got["bytes"] == 32000 and got["ended"] == "client"


GAP = 0.25


async def test_live_pieces_go_out_as_packets_complete(world: World) -> None:
    w = world
    sid = await voice_session(w, "v-live")
    pcm = tone_pcm(2.0)
    published: list[float] = []
    start = time.monotonic()
    for i in range(20):  # a piece every GAP s: a packet held for one more piece shows
        await asyncio.sleep(max(0.0, start + i * GAP - time.monotonic()))
        published.append(time.time())
        await w.probe.publish(f"ivh/{sid}/audio", pcm[i * PIECE : (i + 1) * PIECE])
    reply = await play(w, sid, b"")
    assert reply["status"] == "ok", reply
    assert reply["data"]["final"] is True and reply["data"]["packets"] == 13
    await speak_over(w, sid, reply["data"]["req_id"], "AudioOver")
    [got] = await heard(w, sid)
    assert (got["bytes"], got["sha256"]) == (len(pcm), hashlib.sha256(pcm).hexdigest())
    assert (got["packets"], got["short_packets"], got["seq_gaps"]) == (13, 0, 0)
    assert got["mode"] == "live" and got["ended"] == "client"
    sent = await frames_in(w, sid, "SEND_AUDIO")
    sizes = [len(base64.b64decode(payload(e)["Data"]["Audio"])) for e in sent]
    assert sizes == [5120] * 12 + [2560, 0]
    for k, arrived in enumerate(got["arrivals"][:12]):
        completing = ((k + 1) * 5120 + PIECE - 1) // PIECE - 1  # the piece that completed it
        lag = arrived - published[completing]
        assert 0 <= lag < GAP - 0.05, (k, lag)  # before the next piece, with room for a busy host


async def test_a_pause_past_stream_max_interval_starts_a_new_utterance(world: World) -> None:
    w = world
    sid = await voice_session(w, "v-pause", stream_max_interval=2000)
    pcm = tone_pcm(0.5)
    for i in range(5):
        await w.probe.publish(f"ivh/{sid}/audio", pcm[i * PIECE : (i + 1) * PIECE])
        await asyncio.sleep(0.1)
    await asyncio.sleep(2.3)
    await w.probe.publish(f"ivh/{sid}/audio", pcm[: PIECE * 2])
    await asyncio.sleep(0.3)
    first, second = await heard(w, sid)
    assert first["req_id"] != second["req_id"]
    assert first["bytes"] == len(pcm) and first["ended"] == "client"  # the tail went out too
    assert first["final_empty"] is True
    assert second["bytes"] == 5120


async def test_text_while_audio_plays_waits_for_audio_over(world: World) -> None:
    w = world
    sid = await voice_session(w, "v-order1")
    playing = asyncio.create_task(play(w, sid, tone_wav(3.0)))
    await asyncio.sleep(0.5)
    text = await w.probe.request(
        "ivh/send_text", {"session_id": sid, "text": "hello", "chat_command": "NotUseChat"},
        timeout=10,
    )  # fmt: skip
    assert text["status"] == "ok", text
    file = await playing
    assert file["status"] == "ok" and file["data"]["interrupted"] is True, file
    journal = await w.admin.journal("commandchannel")
    closing = max(e["index"] for e in journal if payload(e).get("Command") == "SEND_AUDIO")
    over = first(journal, SpeakStatus="AudioOver")
    said = first(journal, Command="SEND_TEXT")
    assert closing < over < said
    assert not [e for e in w.probe.on(f"ivh/{sid}/event") if e["type"] == "drive_failed"]


async def test_audio_while_text_speaks_interrupts_it_first(broker: Broker, base: str) -> None:
    async with world_of(broker, base, cloud={"speak_delay": 0.3}, desk={"enabled": False}) as w:
        sid = await voice_session(w, "v-order2")
        text = await w.probe.request(
            "ivh/send_text", {"session_id": sid, "text": "a long sentence " * 8}
        )
        reply = await play(w, sid, tone_wav(0.5))
        assert reply["status"] == "ok", reply
        journal = await w.admin.journal("commandchannel")
        events = w.probe.on(f"ivh/{sid}/event")
    req = text["data"]["req_id"]
    started = first(journal, ReqId=req, SpeakStatus="TextStart")
    stop = next(e["index"] for e in journal if payload(e).get("Data", {}).get("Interrupt") is True)
    over = first(journal, ReqId=req, SpeakStatus="TextOver")
    audio = first(journal, Command="SEND_AUDIO")
    assert started < stop < over < audio
    assert not [e for e in events if e["type"] == "drive_failed"]


async def test_interrupt_stops_audio(world: World) -> None:
    w = world
    sid = await voice_session(w, "v-stop")
    playing = asyncio.create_task(play(w, sid, tone_wav(5.0)))
    await asyncio.sleep(0.5)
    begun = time.monotonic()
    stop = await w.probe.request("ivh/interrupt", {"session_id": sid})
    assert stop["status"] == "ok", stop
    file = await playing
    await speak_over(w, sid, file["data"]["req_id"], "AudioOver", timeout=3)
    assert time.monotonic() - begun < 2  # not the 4.5 s the rest would have played
    assert file["data"]["interrupted"] is True
    assert not [e for e in w.probe.on(f"ivh/{sid}/event") if e["type"] == "drive_failed"]


async def test_refusals_send_no_frame(broker: Broker, base: str) -> None:
    bridge = {"max_audio_payload": 200_000}
    async with world_of(broker, base, desk={"enabled": False}, bridge=bridge) as w:
        text_only = await voice_session(w, "v-text", driver_type=1)
        sid = await voice_session(w, "v-refuse")
        cases = [
            (text_only, tone_wav(0.2), "invalid_payload", "driver_type 3"),
            (sid, b"\x01\x02\x03", "invalid_payload", "odd number of bytes"),
            (sid, wav_of(tone_pcm(0.2) * 2, channels=2, rate=44100), "invalid_payload",
             "44.1 kHz, 16-bit, stereo PCM"),
            (sid, _float_wav(), "invalid_payload", "IEEE float"),
            (sid, b"ID3\x04" + bytes(400), "invalid_payload", "MP3"),
            (sid, tone_wav(7.0), "payload_too_large", "limit is 200000"),
        ]  # fmt: skip
        for target, data, code, words in cases:
            reply = await play(w, target, data)
            assert reply["error"]["code"] == code, reply
            assert words in reply["error"]["message"], reply
        unstarted = await w.probe.request(
            "ivh/create_session", {"virtualman_project_id": "p", "user_id": "v-x", "driver_type": 3}
        )
        reply = await play(w, unstarted["data"]["session_id"], tone_wav(0.2))
        assert reply["error"]["code"] == "channel_unavailable", reply
        assert not [
            e
            for e in await w.admin.journal("commandchannel")
            if payload(e).get("Command") == "SEND_AUDIO"
        ]


def _float_wav() -> bytes:
    wav = bytearray(wav_of(tone_pcm(0.2)))
    wav[20:22] = (3).to_bytes(2, "little")  # the fmt chunk's format tag: IEEE float
    return bytes(wav)


async def test_a_channel_drop_mid_file_ends_it_and_the_next_plays(world: World) -> None:
    w = world
    sid = await voice_session(w, "v-drop")
    playing = asyncio.create_task(play(w, sid, tone_wav(3.0)))
    await asyncio.sleep(1.0)
    await w.admin.drop(sid)
    reply = await playing
    assert reply["error"]["code"] == "channel_unavailable", reply
    assert "dropped" in reply["error"]["message"]
    await w.probe.wait_json(
        f"ivh/{sid}/channel", lambda c: c["state"] == "connected" and c["attempt"] == 0
    )
    await asyncio.sleep(0.3)
    [cut] = await heard(w, sid)
    assert 0 < cut["bytes"] < 96000 and cut["seq_gaps"] == 0
    again = await play(w, sid, tone_wav(1.0))
    assert again["status"] == "ok", again  # after the cut one's AudioOver (auto-finalised)
    first, second = await heard(w, sid)
    assert first["ended"] == "auto" and second["ended"] == "client"
    late = [
        e for e in await frames_in(w, sid, "SEND_AUDIO") if payload(e)["ReqId"] == cut["req_id"]
    ]
    assert len(late) == cut["last_seq"]  # nothing of the cut utterance after the drop


async def test_the_documented_microphone_script_streams_exact_pcm(world: World) -> None:
    """docs/voice.md: `arecord ... | python3 examples/voice/mic.py SID`, stdin from a file."""
    w = world
    sid = await voice_session(w, "v-mic")
    pcm = tone_pcm(1.5)
    env = {
        **os.environ,
        "MQTT_HOST": "127.0.0.1",
        "MQTT_PORT": str(w.probe.port),
        "BASE_TOPIC": w.probe.base,
    }
    start = len(w.probe.messages)
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(MIC), sid, stdin=asyncio.subprocess.PIPE, env=env
    )
    await asyncio.wait_for(proc.communicate(pcm), 20)
    assert proc.returncode == 0
    topic = f"{w.probe.base}/bridge/response/ivh/send_audio"
    found = await w.probe.wait_for(lambda m: m.topic == topic, timeout=10, start=start)
    assert found.json()["data"]["final"] is True
    [got] = await heard(w, sid)
    assert (got["bytes"], got["sha256"]) == (len(pcm), hashlib.sha256(pcm).hexdigest())


async def test_an_early_interrupt_waits_for_audio_start(broker: Broker, base: str) -> None:
    """A.5: an interrupt goes out only once the speech has begun (an earlier one is ignored)."""
    async with world_of(broker, base, cloud={"speak_delay": 0.3}, desk={"enabled": False}) as w:
        sid = await voice_session(w, "v-early")
        await w.probe.publish(f"ivh/{sid}/audio", tone_wav(4.0))
        await asyncio.sleep(0.05)  # the burst is out, AudioStart is 0.3 s away
        begun = time.monotonic()
        stop = await w.probe.request("ivh/interrupt", {"session_id": sid})
        assert stop["status"] == "ok", stop
        await w.probe.wait_json(
            f"ivh/{sid}/event", lambda e: e["data"].get("speak_status") == "AudioOver", timeout=3
        )
        assert time.monotonic() - begun < 2  # stopped, not played to its end
        journal = await w.admin.journal("commandchannel")
    assert first(journal, SpeakStatus="AudioStart") < first(journal, Command="SEND_TEXT")
