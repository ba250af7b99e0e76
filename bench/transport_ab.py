"""`python -m bench.transport_ab OLD_CHECKOUT [ROUNDS]`: client CPU per upstream call of the
HTTP layer before and after aiohttp (issue 18), interleaved in one process.

OLD_CHECKOUT is a tree of commit 607e6b0 (`git worktree add` or `git archive`); its
`bridge/tencent/lean.py` and `http1.py` are loaded from there. The same signed `statsession`
POST goes to one emulator through `LeanClient.post_bytes` (before), `HttpSession.post` (now)
and an aiohttp session with `trust_env=True`, in blocks of 100 calls taking turns, so load
from other processes on the machine falls on all of them alike (docs/performance.md).
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import aiohttp

from bench.procs import EmulatorProc
from bench.upstream import IVH_PATH, Admin, http_client
from bridge.tencent.session import HttpSession
from bridge.tencent.signing import ivh_query

Post = Callable[[str, str, bytes, Mapping[str, str]], Awaitable[tuple[int, bytes]]]
HEADERS = {"Content-Type": "application/json;charset=utf-8"}
BLOCK = 100


def _load(name: str, path: Path) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def _trust_env_post(session: aiohttp.ClientSession) -> Post:
    async def post(
        url: str, query: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        async with session.post(f"{url}?{query}", data=content, headers=headers) as reply:
            return reply.status, await reply.read()

    return post


async def _measure(posts: dict[str, Post], emulator: EmulatorProc, rounds: int) -> dict[str, Any]:
    info = emulator.info
    async with http_client() as admin_http:
        sid = (await Admin(admin_http, emulator.base_url).ivh_sessions(1))[0]
    url = f"{emulator.base_url}{IVH_PATH}statsession"
    body = json.dumps({"Header": {}, "Payload": {"SessionId": sid, "ReqId": "r"}}).encode()

    def query() -> str:
        token, key = info["access_token"], info["appkey"]
        return ivh_query(appkey=key, access_token=token, timestamp=int(time.time()))

    for post in posts.values():  # warm: connections open, caches filled
        for _ in range(50):
            status, _ = await post(url, query(), body, HEADERS)
            assert status == 200
    spent = dict.fromkeys(posts, 0.0)
    for _ in range(rounds):
        for name, post in posts.items():
            started = time.process_time()
            for _ in range(BLOCK):
                await post(url, query(), body, HEADERS)
            spent[name] += time.process_time() - started
    calls = rounds * BLOCK
    result: dict[str, Any] = {
        f"{k}_cpu_ms_per_call": round(v * 1000 / calls, 3) for k, v in spent.items()
    }
    return {**result, "calls_each": calls}


async def run(old: Path, rounds: int) -> dict[str, Any]:
    """Start an emulator, measure the three clients, stop it."""
    _load("bridge.tencent.http1", old / "bridge/tencent/http1.py")
    lean = _load("bridge.tencent.lean", old / "bridge/tencent/lean.py")
    with tempfile.TemporaryDirectory(prefix="bench-ab-") as tmp:
        emulator = EmulatorProc(Path(tmp))
        emulator.start()
        before, now = lean.LeanClient(30.0), HttpSession(timeout=30.0)
        trust_env = aiohttp.ClientSession(trust_env=True)
        try:
            posts = {
                "lean_post_bytes": before.post_bytes,
                "aiohttp_http_session": now.post,
                "aiohttp_trust_env": _trust_env_post(trust_env),
            }
            return await _measure(posts, emulator, rounds)
        finally:
            await before.aclose()
            await now.aclose()
            await trust_env.close()
            emulator.stop()


if __name__ == "__main__":
    rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 30
    print(json.dumps(asyncio.run(run(Path(sys.argv[1]), rounds)), indent=2))
