"""Direct calls to the emulator with httpx (the baselines), and its admin API."""

from __future__ import annotations

import json
import secrets
import time
import uuid
from typing import Any

import httpx

from bridge.tencent.signing import ivh_query
from bridge.tencent.usersig import gen_usersig

IVH_PATH = "/v2/ivh/sessionmanager/sessionmanagerservice/"
DESK_PATH = "/v4/desk_http_svc/"


def http_client() -> httpx.AsyncClient:
    """A pooled client, as a flow engine or the bridge would keep one."""
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=100)
    return httpx.AsyncClient(timeout=httpx.Timeout(30.0), limits=limits)


class Direct:
    """Signed IVH and UserSig Desk calls made by hand: what the bridge does, minus the bridge."""

    def __init__(self, http: httpx.AsyncClient, info: dict[str, Any]) -> None:
        self._http = http
        self._info = info
        self._base = str(info["ivh_base_url"])
        self._usersig = gen_usersig(
            sdkappid=int(info["sdkappid"]),
            identifier=str(info["identifier"]),
            secret_key=str(info["secret_key"]),
            expire=86400,
            now=int(time.time()),
        )

    async def ivh(self, api: str, payload: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """One IVH call; (None or the error code, the reply Payload)."""
        query = ivh_query(
            appkey=self._info["appkey"],
            access_token=self._info["access_token"],
            timestamp=int(time.time()),
        )
        body = {"Header": {}, "Payload": {**payload, "ReqId": uuid.uuid4().hex}}
        url = f"{self._base}{IVH_PATH}{api}?{query}"
        reply = await self._http.post(url, content=json.dumps(body).encode())
        data = reply.json()
        code = data.get("Header", {}).get("Code")
        return (None if reply.status_code == 200 and not code else f"ivh_{code}"), data.get(
            "Payload"
        ) or {}

    async def desk(self, api: str, body: dict[str, Any]) -> tuple[str | None, dict[str, Any]]:
        """One Desk call; (None or the error code, the reply body)."""
        params = {
            "sdkappid": str(self._info["sdkappid"]),
            "identifier": self._info["identifier"],
            "usersig": self._usersig,
            "random": str(secrets.randbits(32)),
            "contenttype": "json",
        }
        url = f"{self._base}{DESK_PATH}{api}"
        reply = await self._http.post(url, params=params, content=json.dumps(body).encode())
        data: dict[str, Any] = reply.json()
        code = data.get("ErrorCode")
        return (None if reply.status_code == 200 and not code else f"desk_{code}"), data


class Admin:
    """The emulator's `/emulator/` admin API."""

    def __init__(self, http: httpx.AsyncClient, base_url: str) -> None:
        self._http = http
        self._base = base_url + "/emulator"

    async def call(self, method: str, path: str, body: Any = None) -> Any:
        """One admin call; raises on HTTP errors."""
        reply = await self._http.request(method, self._base + path, json=body, timeout=120)
        reply.raise_for_status()
        return reply.json() if reply.content else None

    async def ivh_sessions(self, count: int, **fields: Any) -> list[str]:
        """Bulk-create in-progress IVH sessions; their ids."""
        ids: list[str] = []
        while len(ids) < count:
            batch = min(10_000, count - len(ids))
            body = await self.call("POST", "/ivh/sessions", {"count": batch, **fields})
            ids.extend(body["session_ids"])
        return ids

    async def desk_session(self) -> str:
        """A Desk session with a human agent; its id."""
        body = await self.call("POST", "/desk/sessions", {"state": "agent", "agent_id": "a1"})
        return str(body["session_id"])

    async def fault(self, path: str, count: int, **kind: Any) -> None:
        """Arm a fault (e.g. latency) for the next `count` calls of `path`."""
        await self.call("POST", "/faults", {"path": path, "count": count, **kind})
