"""The cost of one HTTP call to the emulator: the bridge's own clients (`IvhClient` and
`DeskClient` on `bridge.tencent.session.http_client`, as the bridge builds them, with the HTTP
fast path and without it, taking turns), httpx (the
bench's direct baseline), aiohttp with `trust_env=True`, and a bare HTTP/1.1 keep-alive request
written on asyncio streams (a floor for any client in Python).

Sequential calls; CPU milliseconds per call of the client (this process) and of the emulator,
read from /proc. Evidence for where rows 1 and 2 spend their time (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp

from bench.procs import EmulatorProc, ProcSample
from bench.upstream import IVH_PATH, Admin, Direct, http_client
from bridge.tencent import fastpost
from bridge.tencent.desk import DeskClient
from bridge.tencent.ivh import IvhClient
from bridge.tencent.session import http_client as bridge_http
from bridge.tencent.signing import ivh_query

Call = Callable[[], Awaitable[Any]]


async def run(workdir: Path, *, quick: bool) -> dict[str, Any]:
    """CPU per call of both clients against the same emulator."""
    calls = 300 if quick else 1000
    workdir.mkdir(parents=True, exist_ok=True)
    emulator = EmulatorProc(workdir)
    emulator.start()
    try:
        async with http_client() as http:
            admin = Admin(http, emulator.base_url)
            sid = (await admin.ivh_sessions(1))[0]
            desk_sid = await admin.desk_session()
            direct = Direct(http, emulator.info)
            httpx_cost = await _cost(
                lambda: direct.ivh("statsession", {"SessionId": sid}), calls, emulator.pid
            )
        bridge = await _bridge_costs(emulator, sid, desk_sid, calls)
        trust_env = await _trust_env_cost(emulator, sid, calls)
        bare = await _bare(emulator, sid)
        try:
            bare_cost = await _cost(bare.call, calls, emulator.pid)
        finally:
            bare.close()
    finally:
        emulator.stop()
    return {
        "calls": calls,
        **bridge,
        "httpx": httpx_cost,
        "aiohttp_trust_env": trust_env,
        "bare_asyncio_streams": bare_cost,
    }


async def _bridge_costs(
    emulator: EmulatorProc, sid: str, desk_sid: str, calls: int
) -> dict[str, dict[str, Any]]:
    """The bridge's clients on the session the bridge builds, with the HTTP fast path
    (bridge/tencent/fastpost.py) and without it (aiohttp's own request path), taking turns in
    blocks so that the host's load falls on both alike."""
    info = emulator.info
    paths = {"fast_path": fastpost.enabled(True), "aiohttp": False}
    sessions = {name: (bridge_http(30.0, fast_path=on), bridge_http(30.0, fast_path=on))
                for name, on in paths.items()}  # fmt: skip
    ivh_calls: dict[str, Call] = {}
    desk_calls: dict[str, Call] = {}
    for name, (ivh_http, desk_http) in sessions.items():
        ivh = IvhClient(
            ivh_http, base_url=emulator.base_url, appkey=info["appkey"],
            access_token=info["access_token"],
        )  # fmt: skip
        desk = DeskClient(
            desk_http, base_url=emulator.base_url, sdkappid=int(info["sdkappid"]),
            identifier=str(info["identifier"]), secret_key=str(info["secret_key"]),
        )  # fmt: skip
        ivh_calls[name] = functools.partial(ivh.stat_session, sid)
        desk_calls[name] = functools.partial(desk.get_session_state, session_id=desk_sid)
    try:
        return {
            "bridge_ivh_statsession": await _taking_turns(ivh_calls, calls, emulator.pid),
            "bridge_desk_get_session_state": await _taking_turns(desk_calls, calls, emulator.pid),
        }
    finally:
        for pair in sessions.values():
            for http in pair:
                await http.aclose()


async def _taking_turns(calls: dict[str, Call], count: int, emulator_pid: int) -> dict[str, Any]:
    """`_cost` of each call, in blocks of 100 taking turns; then fast_path / aiohttp."""
    spent = {name: [0.0, 0.0, 0.0] for name in calls}
    for call in calls.values():
        for _ in range(20):
            await call()
    for _ in range(max(count // 100, 1)):
        for name, call in calls.items():
            cost = await _measure(call, 100, emulator_pid)
            for i, key in enumerate(_COST_KEYS):
                spent[name][i] += cost[key]
    rounds = max(count // 100, 1)
    result: dict[str, Any] = {
        name: {key: round(total[i] / rounds, 3) for i, key in enumerate(_COST_KEYS)}
        for name, total in spent.items()
    }
    fast, plain = result["fast_path"], result["aiohttp"]
    result["fast_path_over_aiohttp_client_cpu"] = round(
        fast["client_cpu_ms_per_call"] / max(plain["client_cpu_ms_per_call"], 1e-9), 3
    )
    return result


async def _trust_env_cost(emulator: EmulatorProc, sid: str, calls: int) -> dict[str, float]:
    """aiohttp reading proxies (and ~/.netrc) from the environment on every request, in a
    worker thread: why the bridge's session reads them once instead."""
    info = emulator.info
    url = f"{emulator.base_url}{IVH_PATH}statsession"

    async with aiohttp.ClientSession(trust_env=True) as session:

        async def call() -> Any:
            query = ivh_query(
                appkey=info["appkey"], access_token=info["access_token"], timestamp=int(time.time())
            )
            body = json.dumps({"Header": {}, "Payload": {"SessionId": sid, "ReqId": "r"}})
            async with session.post(f"{url}?{query}", data=body.encode()) as reply:
                return await reply.read()

        return await _cost(call, calls, emulator.pid)


_COST_KEYS = ("client_cpu_ms_per_call", "emulator_cpu_ms_per_call", "wall_ms_per_call")


async def _cost(call: Call, count: int, emulator_pid: int) -> dict[str, float]:
    for _ in range(20):
        await call()
    return await _measure(call, count, emulator_pid)


async def _measure(call: Call, count: int, emulator_pid: int) -> dict[str, float]:
    me, emu, started = ProcSample.of(os.getpid()), ProcSample.of(emulator_pid), time.perf_counter()
    for _ in range(count):
        await call()
    wall = time.perf_counter() - started
    me2, emu2 = ProcSample.of(os.getpid()), ProcSample.of(emulator_pid)
    return {
        "client_cpu_ms_per_call": round((me2.cpu_s - me.cpu_s) * 1000 / count, 3),
        "emulator_cpu_ms_per_call": round((emu2.cpu_s - emu.cpu_s) * 1000 / count, 3),
        "wall_ms_per_call": round(wall * 1000 / count, 3),
    }


class _Bare:
    """One keep-alive connection; a signed POST per call, Content-Length answers only."""

    def __init__(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, info: dict[str, Any]
    ) -> None:
        self._reader, self._writer, self._info = reader, writer, info
        self.session_id = ""

    async def call(self) -> Any:
        query = ivh_query(
            appkey=self._info["appkey"],
            access_token=self._info["access_token"],
            timestamp=int(time.time()),
        )
        payload = {"SessionId": self.session_id, "ReqId": uuid.uuid4().hex}
        body = json.dumps({"Header": {}, "Payload": payload}).encode()
        head = (
            f"POST {IVH_PATH}statsession?{query} HTTP/1.1\r\nHost: 127.0.0.1\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        self._writer.write(head.encode() + body)
        raw = await self._reader.readuntil(b"\r\n\r\n")
        lines = raw.split(b"\r\n")
        size = next(int(x.split(b":")[1]) for x in lines if x.lower().startswith(b"content-length"))
        return json.loads(await self._reader.readexactly(size))

    def close(self) -> None:
        self._writer.close()


async def _bare(emulator: EmulatorProc, sid: str) -> _Bare:
    port = int(emulator.base_url.rsplit(":", 1)[1])
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    bare = _Bare(reader, writer, emulator.info)
    bare.session_id = sid
    return bare
