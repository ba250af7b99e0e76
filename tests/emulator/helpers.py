"""Test-side clients for the emulator, written from docs/protocol.md and independent of bridge
code."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import secrets
import time
import urllib.parse
from collections.abc import Callable
from typing import Any

import httpx
import TLSSigAPIv2
from websockets.asyncio.client import ClientConnection, connect

from bridge.emulator import Emulator

IVH = "/v2/ivh/sessionmanager/sessionmanagerservice/"
Payload = dict[str, Any]


def reference_signature(params: dict[str, str], access_token: str) -> str:
    """docs/protocol.md A.2 in four lines: sorted k=v joined by &, HMAC-SHA256, standard Base64."""
    content = "&".join(f"{k}={v}" for k, v in sorted(params.items()))
    digest = hmac.new(access_token.encode(), content.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()


def signed_query(emu: Emulator, *, ts: int | None = None, **extra: str) -> str:
    """A signed query string for the emulator's credentials (URL-encoded signature)."""
    params = {"appkey": emu.config.appkey, "timestamp": str(ts or int(time.time())), **extra}
    sig = reference_signature(params, emu.config.access_token)
    return urllib.parse.urlencode(params) + "&signature=" + urllib.parse.quote(sig, safe="")


def new_req_id() -> str:
    """A.1: a 32-character UUID without dashes."""
    return secrets.token_hex(16)


async def ivh(client: httpx.AsyncClient, emu: Emulator, api: str, **payload: Any) -> Payload:
    """Call one session-manager API, return the whole response envelope."""
    body = {"Header": {}, "Payload": {"ReqId": new_req_id(), **payload}}
    response = await client.post(f"{IVH}{api}?{signed_query(emu)}", json=body)
    is_json = response.headers.get("content-type", "").startswith("application/json")
    result: Payload = response.json() if is_json else {"_text": response.text}
    result["_status"] = response.status_code
    return result


def code(envelope: Payload) -> int:
    """``Header.Code`` of an IVH answer."""
    value: int = envelope["Header"]["Code"]
    return value


async def create_session(
    client: httpx.AsyncClient, emu: Emulator, user_id: str = "kiosk-1", **extra: Any
) -> str:
    """createsession with sensible defaults; returns the SessionId."""
    fields = {"VirtualmanProjectId": "proj-1", "UserId": user_id, "Protocol": "rtmp"}
    envelope = await ivh(client, emu, "createsession", **{**fields, **extra})
    assert code(envelope) == 0, envelope
    sid: str = envelope["Payload"]["SessionId"]
    return sid


async def wait_status(
    client: httpx.AsyncClient, emu: Emulator, sid: str, status: int, timeout: float = 2.0
) -> Payload:
    """Poll statsession until SessionStatus is ``status``."""
    async with asyncio.timeout(timeout):
        while True:
            envelope = await ivh(client, emu, "statsession", SessionId=sid)
            if envelope["Payload"].get("SessionStatus") == status:
                return envelope
            await asyncio.sleep(0.01)


async def started_session(
    client: httpx.AsyncClient, emu: Emulator, user_id: str = "kiosk-1", **extra: Any
) -> str:
    """A session created, in progress and started."""
    sid = await create_session(client, emu, user_id, **extra)
    await wait_status(client, emu, sid, 1)
    assert code(await ivh(client, emu, "startsession", SessionId=sid)) == 0
    return sid


def channel_url(emu: Emulator, sid: str, **overrides: str) -> str:
    """The signed command-channel URL of a session (`overrides` replace signed parameters)."""
    params = {"appkey": emu.config.appkey, "timestamp": str(int(time.time())), "requestid": sid}
    params.update(overrides)
    sig = reference_signature(params, emu.config.access_token)
    query = urllib.parse.urlencode(params) + "&signature=" + urllib.parse.quote(sig, safe="")
    return f"{emu.ws_url}?{query}"


async def open_channel(emu: Emulator, sid: str) -> ClientConnection:
    """An open command channel (close it when done)."""
    return await connect(channel_url(emu, sid), open_timeout=2)


def drive(sid: str, command: str, req_id: str | None = None, **data: Any) -> str:
    """An upstream frame (A.5)."""
    payload = {"ReqId": req_id or new_req_id(), "SessionId": sid, "Command": command, "Data": data}
    return json.dumps({"Header": {}, "Payload": payload})


async def collect(
    ws: ClientConnection, until: Callable[[Payload], bool], timeout: float = 3.0
) -> list[Payload]:
    """Downstream payloads up to and including the first one for which ``until`` holds."""
    payloads: list[Payload] = []
    async with asyncio.timeout(timeout):
        while True:
            frame = json.loads(await ws.recv())
            payloads.append(frame["Payload"])
            if until(frame["Payload"]):
                return payloads


def is_status(status: str, req_id: str | None = None) -> Callable[[Payload], bool]:
    """Predicate: a Type 3 frame with this SpeakStatus (and ReqId)."""

    def check(p: Payload) -> bool:
        return p.get("SpeakStatus") == status and (req_id is None or p.get("ReqId") == req_id)

    return check


def statuses(payloads: list[Payload]) -> list[str]:
    """The SpeakStatus sequence of the Type 3 payloads."""
    return [p["SpeakStatus"] for p in payloads if p.get("Type") == 3]


def usersig(emu: Emulator, expire: int = 86400, *, identifier: str | None = None) -> str:
    """A UserSig made by Tencent's official tls-sig-api-v2 package."""
    api = TLSSigAPIv2.TLSSigAPIv2(emu.config.sdkappid, emu.config.secret_key)
    sig: str = api.gen_sig(identifier or emu.config.identifier, expire)
    return sig


def desk_query(emu: Emulator, **overrides: str) -> str:
    """B.1 URL parameters with a valid UserSig; ``overrides`` replace or add parameters."""
    params = {
        "sdkappid": str(emu.config.sdkappid),
        "identifier": emu.config.identifier,
        "usersig": usersig(emu),
        "random": str(secrets.randbelow(2**32)),
        "contenttype": "json",
        **overrides,
    }
    return urllib.parse.urlencode(params)


async def desk(
    client: httpx.AsyncClient, emu: Emulator, command: str, body: Any = None, **query: str
) -> Payload:
    """Call one Desk command, return the JSON answer (asserting HTTP 200)."""
    content = body if isinstance(body, bytes) else json.dumps(body or {}).encode()
    url = f"/v4/desk_http_svc/{command}?{desk_query(emu, **query)}"
    response = await client.post(url, content=content)
    assert response.status_code == 200
    result: Payload = response.json()
    return result
