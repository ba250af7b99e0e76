"""The cost of one HTTP call to the emulator: httpx (what the bridge uses) vs a bare HTTP/1.1
keep-alive request written on asyncio streams (a floor for any client in Python).

Sequential `statsession` calls; CPU milliseconds per call of the client (this process) and of
the emulator, read from /proc. Evidence for where rows 1 and 2 spend their time.
"""

from __future__ import annotations

import asyncio
import json
import os
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from bench.procs import EmulatorProc, ProcSample
from bench.upstream import IVH_PATH, Admin, Direct, http_client
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
            sid = (await Admin(http, emulator.base_url).ivh_sessions(1))[0]
            direct = Direct(http, emulator.info)
            httpx_cost = await _cost(
                lambda: direct.ivh("statsession", {"SessionId": sid}), calls, emulator.pid
            )
        bare = await _bare(emulator, sid)
        try:
            bare_cost = await _cost(bare.call, calls, emulator.pid)
        finally:
            bare.close()
    finally:
        emulator.stop()
    return {"calls": calls, "httpx": httpx_cost, "bare_asyncio_streams": bare_cost}


async def _cost(call: Call, count: int, emulator_pid: int) -> dict[str, float]:
    for _ in range(20):
        await call()
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
