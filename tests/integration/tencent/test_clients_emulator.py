"""The typed clients against the emulator over real HTTP: lifecycle, error mapping, retries.

The emulator verifies signatures and UserSigs with its own code (written from docs/protocol.md), so
a
call that succeeds here was signed correctly by an independent judge. Calls are counted in the
emulator's journal, so "retried" and "called once" are facts about the wire.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass

import pytest

from bridge.emulator import Emulator
from bridge.errors import UpstreamError
from bridge.tencent.desk import DeskClient
from bridge.tencent.ivh import IvhClient
from bridge.tencent.retry import RetryPolicy
from bridge.tencent.session import HttpSession
from tests.support.cloud import Admin, emulator

FAST = RetryPolicy(attempts=3, initial_delay=0.01, max_delay=0.02, deadline=5.0)


@dataclass
class Cloud:
    emu: Emulator
    admin: Admin
    ivh: IvhClient
    desk: DeskClient

    async def calls(self, path: str) -> int:
        """HTTP calls the emulator received whose path contains `path`."""
        return sum(1 for e in await self.admin.journal(path) if e.get("kind") == "http")


@pytest.fixture
async def cloud(fast_path: bool) -> AsyncIterator[Cloud]:
    async with (
        emulator() as emu,
        Admin(emu) as admin,
        HttpSession(fast_path=fast_path, timeout=2) as http,
    ):
        cfg = emu.config
        ivh = IvhClient(
            http,
            base_url=emu.base_url,
            appkey=cfg.appkey,
            access_token=cfg.access_token,
            retry=FAST,
        )
        desk = DeskClient(
            http,
            base_url=emu.base_url,
            sdkappid=cfg.sdkappid,
            identifier=cfg.identifier,
            secret_key=cfg.secret_key,
            retry=FAST,
        )
        yield Cloud(emu, admin, ivh, desk)


async def _fails(call: Callable[[], Awaitable[object]]) -> UpstreamError:
    with pytest.raises(UpstreamError) as info:
        await call()
    return info.value


async def _ready(cloud: Cloud, user_id: str) -> str:
    created = await cloud.ivh.create_session(
        virtualman_project_id="proj-1", user_id=user_id, protocol="webrtc", driver_type=1
    )
    async with asyncio.timeout(3):
        while (await cloud.ivh.stat_session(created.session_id)).session_status != 1:
            await asyncio.sleep(0.02)
    return created.session_id


async def test_ivh_lifecycle_over_real_http(cloud: Cloud) -> None:
    sid = await _ready(cloud, "kiosk-a")
    await cloud.ivh.start_session(sid)
    stat = await cloud.ivh.stat_session(sid)
    assert (stat.status_name, stat.is_session_started) == ("in_progress", True)
    listed = await cloud.ivh.list_sessions()
    assert [(s.session_id, s.user_id) for s in listed] == [(sid, "kiosk-a")]
    assert [s.session_id for s in await cloud.ivh.list_project_sessions("proj-1")] == [sid]
    await cloud.ivh.close_session(sid)
    assert await cloud.ivh.list_sessions() == []


@pytest.mark.parametrize(
    ("code", "spec_code"),
    [(110013, "session_closed"), (110018, "session_not_found"), (100005, "auth_failed")],
)
async def test_ivh_non_retryable_code_is_called_once(
    cloud: Cloud, code: int, spec_code: str
) -> None:
    await cloud.admin.fault("statsession", 5, error_code=code)
    err = await _fails(lambda: cloud.ivh.stat_session("any"))
    assert (err.code, err.upstream_code, err.retryable) == (spec_code, code, False)
    assert await cloud.calls("statsession") == 1


async def test_ivh_retryable_code_is_retried_then_succeeds(cloud: Cloud) -> None:
    await cloud.admin.fault("listsessionofuin", 2, error_code=100012)
    assert await cloud.ivh.list_sessions() == []
    assert await cloud.calls("listsessionofuin") == 3


async def test_ivh_5xx_burst_beyond_attempts_is_upstream_unavailable(cloud: Cloud) -> None:
    await cloud.admin.fault("listsessionofuin", 10, http_status=503)
    err = await _fails(cloud.ivh.list_sessions)
    assert (err.code, err.http_status, err.retryable) == ("upstream_unavailable", 503, True)
    assert await cloud.calls("listsessionofuin") == FAST.attempts


async def test_ivh_wrong_token_is_auth_failed(fast_path: bool, cloud: Cloud) -> None:
    async with HttpSession(fast_path=fast_path, timeout=2) as http:
        wrong = IvhClient(
            http, base_url=cloud.emu.base_url, appkey=cloud.emu.config.appkey,
            access_token="not-the-token", retry=FAST,
        )  # fmt: skip
        err = await _fails(wrong.list_sessions)
    assert err.code == "auth_failed"
    assert await cloud.calls("listsessionofuin") == 1


async def test_desk_state_and_stream_over_real_http(cloud: Cloud) -> None:
    sid = await cloud.admin.desk_session(state="queuing")
    state = await cloud.desk.get_session_state(session_id=sid)
    assert (state.session_id, state.state) == (sid, "queuing")
    key = await cloud.desk.send_stream_msg(session_id=sid, chunk="Hello, ")
    assert key
    assert await cloud.desk.send_stream_msg(session_id=sid, chunk="world", msg_key=key) == key
    await cloud.desk.send_stream_msg(session_id=sid, chunk="!", msg_key=key, finish=True)
    [message] = await cloud.admin.messages(sid)
    assert (message["text"], message["finished"], message["msg_key"]) == (
        "Hello, world!",
        True,
        key,
    )


async def test_desk_ended_session_is_session_not_found(cloud: Cloud) -> None:
    sid = await cloud.admin.desk_session()
    await cloud.admin.end_desk(sid)
    err = await _fails(lambda: cloud.desk.get_session_state(session_id=sid))
    assert (err.code, err.upstream_code, err.retryable) == ("session_not_found", 141005, False)
    assert await cloud.calls("get_session_state") == 1


async def test_desk_retryable_code_is_retried_then_succeeds(cloud: Cloud) -> None:
    sid = await cloud.admin.desk_session(state="agent")
    await cloud.admin.fault("get_session_state", 2, error_code=141002)
    assert (await cloud.desk.get_session_state(session_id=sid)).state == "agent"
    assert await cloud.calls("get_session_state") == 3


@pytest.mark.parametrize("code", [70001, 60004])
async def test_desk_expired_usersig_is_regenerated_once(cloud: Cloud, code: int) -> None:
    """B.7: an expired UserSig (70001), or a bad signature in the URL (60004), is answered by
    regenerating it, once."""
    sid = await cloud.admin.desk_session()
    await cloud.admin.fault("get_session_state", 1, error_code=code)
    assert (await cloud.desk.get_session_state(session_id=sid)).session_id == sid
    entries = [e for e in await cloud.admin.journal("get_session_state") if e["kind"] == "http"]
    assert len(entries) == 2
    assert entries[0]["query"].get("random") != entries[1]["query"].get("random")


async def test_desk_stream_chunk_is_not_resent_after_a_timeout(
    fast_path: bool, cloud: Cloud
) -> None:
    sid = await cloud.admin.desk_session()
    await cloud.admin.fault("send_stream_msg", 1, latency_ms=600)  # applied, answered too late
    cfg = cloud.emu.config
    async with HttpSession(fast_path=fast_path, timeout=0.2) as http:
        impatient = DeskClient(
            http, base_url=cloud.emu.base_url, sdkappid=cfg.sdkappid,
            identifier=cfg.identifier, secret_key=cfg.secret_key, retry=FAST,
        )  # fmt: skip
        err = await _fails(lambda: impatient.send_stream_msg(session_id=sid, chunk="once"))
    assert err.code == "timeout"
    async with asyncio.timeout(3):  # the emulator journals the call once its answer is sent
        while await cloud.calls("send_stream_msg") == 0:
            await asyncio.sleep(0.05)
    [message] = await cloud.admin.messages(sid)
    assert message["text"] == "once"
    assert await cloud.calls("send_stream_msg") == 1


async def test_desk_stream_chunk_is_resent_when_it_cannot_have_applied(cloud: Cloud) -> None:
    sid = await cloud.admin.desk_session()
    await cloud.admin.fault("send_stream_msg", 1, error_code=20005)
    key = await cloud.desk.send_stream_msg(session_id=sid, chunk="twice?", finish=True)
    [message] = await cloud.admin.messages(sid)
    assert (message["text"], message["msg_key"]) == ("twice?", key)
    assert await cloud.calls("send_stream_msg") == 2
