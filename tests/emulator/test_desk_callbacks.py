"""The emulator's session event callback (docs/protocol.md B.6): query, body, retries by
RequestID, drop and duplicate, delivered to a plain asyncio HTTP receiver over a real socket."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import pytest

from bridge.emulator.desk_callbacks import MAX_RETRIES
from tests.emulator.conftest import EmulatorFactory


@dataclass
class Receiver:
    """Answers the first `fail` requests with HTTP 500, the rest OK; records them all."""

    fail: int = 0
    got: list[tuple[dict[str, list[str]], dict[str, Any]]] = field(default_factory=list)
    port: int = 0

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode().split("\r\n")
        length = next(int(x.split(":")[1]) for x in lines if x.lower().startswith("content-length"))
        body = json.loads(await reader.readexactly(length))
        self.got.append((parse_qs(urlsplit(lines[0].split()[1]).query), body))
        ok = len(self.got) > self.fail
        answer = b'{"ActionStatus":"OK","ErrorCode":0,"ErrorInfo":""}' if ok else b"{}"
        status = b"200 OK" if ok else b"500 Internal Server Error"
        writer.write(b"HTTP/1.1 " + status + b"\r\nContent-Length: %d\r\n" % len(answer))
        writer.write(b"Connection: close\r\n\r\n" + answer)
        await writer.drain()
        writer.close()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    rec = Receiver()
    server = await asyncio.start_server(rec.handle, "127.0.0.1", 0)
    rec.port = server.sockets[0].getsockname()[1]
    async with server:
        yield rec


async def _wait(check: Any, timeout: float = 5) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.01)


async def test_session_created_is_posted_with_the_documented_query_and_body(
    make_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    async with (
        make_emulator(desk_callback=hook) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as http,
    ):
        await http.post("/emulator/desk/sessions", json={"session_id": "s1"})
        await _wait(lambda: receiver.got)
    query, body = receiver.got[0]
    assert query["SdkAppid"] == [str(emu.config.sdkappid)]
    assert query["CallbackCommand"] == ["Desk.SessionEventNotify"]
    assert query["contenttype"] == ["json"] and query["RequestID"][0]
    assert body["Event"] == "SessionBegin" and body["SessionId"] == "s1"
    assert isinstance(body["EventTime"], int) and body["ChannelType"] == "SDK"


async def test_a_delivery_not_answered_ok_is_retried_with_the_same_request_id(
    make_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    receiver.fail = 2
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    async with (
        make_emulator(desk_callback=hook) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as http,
    ):
        await http.post("/emulator/desk/sessions", json={"session_id": "s1"})
        await _wait(lambda: len(receiver.got) == 3)
        view = (await http.get("/emulator/desk/callback")).json()
    ids = {q["RequestID"][0] for q, _ in receiver.got}
    assert len(ids) == 1
    assert view["counts"]["acked"] == 1 and view["counts"]["retries"] == 2
    assert "hook" not in json.dumps(view)  # the URL's path is a secret


async def test_retries_stop_after_three(make_emulator: EmulatorFactory, receiver: Receiver) -> None:
    receiver.fail = 100
    hook = f"http://127.0.0.1:{receiver.port}/hook"
    async with (
        make_emulator(desk_callback=hook) as emu,
        httpx.AsyncClient(base_url=emu.base_url) as http,
    ):
        await http.post("/emulator/desk/sessions", json={"session_id": "s1"})
        await _wait(lambda: emu.state.callbacks.counts["failed"] == 1)
    assert len(receiver.got) == 1 + MAX_RETRIES


async def test_drop_duplicate_and_transfer_events(
    make_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    async with make_emulator() as emu, httpx.AsyncClient(base_url=emu.base_url) as http:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        await http.post("/emulator/desk/callback", json={"url": url, "drop": 1, "duplicate": 1})
        await http.post("/emulator/desk/sessions", json={"session_id": "s1"})  # dropped
        await http.post("/emulator/desk/sessions/s1/state", json={"state": "queuing"})  # twice
        await http.post("/emulator/desk/sessions/s1/state", json={"state": "agent"})
        await http.delete("/emulator/desk/sessions/s1")
        await _wait(lambda: len(receiver.got) == 4)
    events = [b["Event"] for _, b in receiver.got]
    assert events == ["Transfer.Start", "Transfer.Start", "Transfer.Success", "SessionEnd"]
    assert receiver.got[0][0]["RequestID"] == receiver.got[1][0]["RequestID"]


def test_transfer_bodies_are_checked() -> None:
    """Priority 0-9 and 0/1 flags (B.5); the first AgentIdList entry is the one asked for."""
    from bridge.emulator.desk_handover import parse_transfer
    from bridge.emulator.fields import FieldError

    with pytest.raises(FieldError):
        parse_transfer({"SessionId": "s", "Priority": 10})
    with pytest.raises(FieldError):
        parse_transfer({"SessionId": "s", "DisableQueuing": 2})
    ask = parse_transfer(
        {"SessionId": "s", "AgentIdList": ["a"], "EndSessionWhenNoMemberOnline": 1}
    )
    assert ask.agent_ids == ["a"] and ask.end_if_no_agent


async def test_a_delayed_delivery_arrives_after_later_ones(
    make_emulator: EmulatorFactory, receiver: Receiver
) -> None:
    async with make_emulator() as emu, httpx.AsyncClient(base_url=emu.base_url) as http:
        url = f"http://127.0.0.1:{receiver.port}/hook"
        rules = {"url": url, "delay_ms": 300, "delay_count": 1}
        await http.post("/emulator/desk/callback", json=rules)
        await http.post("/emulator/desk/sessions", json={"session_id": "s1"})  # delayed
        await http.post("/emulator/desk/sessions/s1/chat", json={"role": "user", "text": "hi"})
        await _wait(lambda: len(receiver.got) == 1)
        assert receiver.got[0][1]["Event"] == "ChatBot.UserSendMsg"
        await _wait(lambda: len(receiver.got) == 2)
    assert receiver.got[1][1]["Event"] == "SessionBegin"
