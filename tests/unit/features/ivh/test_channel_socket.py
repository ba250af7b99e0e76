"""`SessionChannel` over a real socket, against a small WebSocket server that does what a test
needs: it records the handshake and the frames sent, and pushes given frames, then drops the
socket. What the emulator cannot show: the handshake's headers, frames alike on one connection,
and text drives' spacing as a server receives them."""

from __future__ import annotations

import asyncio
import itertools
import json
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
from websockets.asyncio.server import ServerConnection, serve

from bridge.errors import ChannelError
from bridge.features.ivh.channel import ChannelSettings, SessionChannel
from bridge.features.ivh.frames import drive

SID = "S-1"


class Host:
    """The IVH feature's side of a channel: a URL, the session open, events collected."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.events: list[tuple[str, dict[str, Any]]] = []

    def channel_url(self, session_id: str) -> str:
        return self.url

    async def session_open(self, session_id: str) -> bool:
        return True

    def channel_state(self, session_id: str, state: dict[str, Any]) -> None:
        pass  # the tests here read events, not the retained channel state

    def downstream(self, session_id: str, event_type: str, data: dict[str, Any]) -> None:
        self.events.append((event_type, data))


class Server:
    """Each connection: push `script[n]` (the frames for the n-th connection), then keep the
    socket open if it is the last script, else close it."""

    def __init__(self, script: list[list[dict[str, Any]]]) -> None:
        self.script = script
        self.handshakes: list[dict[str, str]] = []
        self.received: list[tuple[float, dict[str, Any]]] = []

    async def handler(self, ws: ServerConnection) -> None:
        n = len(self.handshakes)
        assert ws.request is not None
        self.handshakes.append(dict(ws.request.headers))
        for frame in self.script[n] if n < len(self.script) else []:
            await ws.send(json.dumps({"Header": {"Code": 0}, "Payload": frame}))
        if n + 1 < len(self.script):
            await ws.close()
            return
        async for raw in ws:
            self.received.append((time.monotonic(), json.loads(raw)))


@asynccontextmanager
async def channel(
    script: list[list[dict[str, Any]]], **settings: Any
) -> AsyncIterator[tuple[SessionChannel, Host, Server]]:
    server = Server(script)
    async with serve(server.handler, "127.0.0.1", 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        async with running(port, **settings) as (chan, host):
            yield chan, host, server


@asynccontextmanager
async def running(port: int, **settings: Any) -> AsyncIterator[tuple[SessionChannel, Host]]:
    """A channel to a server on `port` (there may be none yet: it keeps trying)."""
    host = Host(f"ws://127.0.0.1:{port}/v2/ws/ivh/commandchannel?requestid={SID}")
    options = {"reconnect_initial": 0.01, "reconnect_max": 0.05, **settings}
    chan = SessionChannel(SID, host=host, settings=ChannelSettings(**options))
    task = asyncio.create_task(chan.run())
    try:
        yield chan, host
    finally:
        chan.close()
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)


async def until(check: Any, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def speak(status: str, seq: int | None = None) -> dict[str, Any]:
    frame: dict[str, Any] = {"Type": 3, "SessionId": SID, "ReqId": "r1", "SpeakStatus": status}
    if seq is not None:
        frame["Seq"] = seq
    return frame


async def test_the_handshake_names_the_documented_content_type() -> None:
    async with channel([[]]) as (chan, _, server):
        await until(lambda: chan.connected)
        headers = {k.lower(): v for k, v in server.handshakes[0].items()}
        assert headers["content-type"] == "application/json;charset=utf-8"


async def test_frames_alike_on_one_connection_are_all_published_and_a_replay_is_not() -> None:
    """Clauses of one stream may share their key (a server that does not number them): each is
    an event. After a reconnect, the cloud's re-send of what was seen is dropped, and a frame
    the old connection never delivered is published."""
    first = [speak("SentenceStart"), speak("SentenceStart"), speak("SentenceOver", 1)]
    replay = [speak("SentenceStart"), speak("SentenceOver", 1), speak("TextOver")]
    async with channel([first, replay]) as (chan, host, server):
        await until(lambda: len(server.handshakes) == 2 and chan.connected)
        await until(lambda: any(d.get("speak_status") == "TextOver" for _, d in host.events))
        await asyncio.sleep(0.1)
        statuses = [d["speak_status"] for t, d in host.events if t == "speak_status"]
        assert statuses == ["SentenceStart", "SentenceStart", "SentenceOver", "TextOver"]


async def test_a_drive_given_up_before_the_socket_opens_sends_none_of_its_frames() -> None:
    """A stream chunk of two frames waits for a channel that is down; its requester gives
    up; when the socket opens, neither frame goes out (not half a chunk, late)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with running(port) as (chan, _):
        frames = [
            drive(SID, "SEND_STREAMTEXT", {"Text": t, "Seq": i}, "r")
            for i, t in [(1, "a"), (2, "b")]
        ]
        item = chan.enqueue(*frames, paced=False)
        with pytest.raises(ChannelError):
            await chan.wait(item, 0.2)
        server = Server([[]])
        async with serve(server.handler, "127.0.0.1", port):
            await until(lambda: chan.connected)
            late = chan.enqueue(drive(SID, "SEND_TEXT", {"Text": "later"}, "r2"), paced=False)
            await chan.wait(late, 5)
            await until(lambda: len(server.received) == 1)
        assert [f["Payload"]["Data"]["Text"] for _, f in server.received] == ["later"]


async def test_text_drives_arrive_more_than_the_interval_apart() -> None:
    """Tencent: text drives *more than* 1 s apart (A.5). With an interval of 0.5 s the server
    must see gaps of 0.55 s (the margin: a tenth), give or take 30 ms of scheduling (the server
    shares the test's loop); without the margin they are 0.50 s."""
    async with channel([[]], text_interval=0.5) as (chan, _, server):
        await until(lambda: chan.connected)
        items = [
            chan.enqueue(drive(SID, "SEND_TEXT", {"Text": f"t{i}"}, f"r{i}"), paced=True)
            for i in range(3)
        ]
        for item in items:
            await chan.wait(item, 5)
        await until(lambda: len(server.received) == 3)
        times = [at for at, _ in server.received]
        gaps = [b - a for a, b in itertools.pairwise(times)]
        assert all(gap >= 0.55 - 0.03 for gap in gaps), gaps


async def test_keys_handed_over_by_a_previous_owner_are_replays_on_the_first_connection() -> None:
    """A moved session: the cloud re-sends to the new owner's first socket what the old owner
    published; the keys it handed over (`seed`) say which. Malformed keys are ignored."""
    server = Server([[speak("TextStart"), speak("TextOver"), speak("SentenceOver", 2)]])
    async with serve(server.handler, "127.0.0.1", 0) as ws_server:
        port = ws_server.sockets[0].getsockname()[1]
        host = Host(f"ws://127.0.0.1:{port}/v2/ws/ivh/commandchannel?requestid={SID}")
        chan = SessionChannel(SID, host=host, settings=ChannelSettings())
        handed = [["r1", "TextStart", None, None], ["r1", "TextOver", None, None]]
        chan.seed([*handed, ["r1", "SentenceOver"], "r1", ["r1", ["x"], 2, None]])
        assert chan.recent_replays() == handed
        task = asyncio.create_task(chan.run())
        try:
            await until(lambda: host.events)
            await asyncio.sleep(0.1)
        finally:
            chan.close()
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
    assert [d["speak_status"] for _, d in host.events] == ["SentenceOver"]
