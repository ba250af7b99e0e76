"""Scripted `httpx.MockTransport` handlers and real-shaped Tencent replies for client tests."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
import zlib
from collections.abc import Callable, Mapping
from typing import Any

import httpx

from bridge.core.observe import CallObserver, CallRecord
from bridge.tencent.desk import DeskClient
from bridge.tencent.ivh import IvhClient
from bridge.tencent.retry import RetryPolicy

APPKEY = "e38267c0e86411ebb02aed82acb0ed99"
TOKEN = "f68f2d10ae9e4604b76fb05cf46bccec"
SDKAPPID = 1400000000
IDENTIFIER = "administrator"
SECRET_KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
IVH_BASE = "https://gw.tvs.qq.com"
DESK_BASE = "https://console.tim.qq.com"
FAST = RetryPolicy(attempts=4, initial_delay=0.001, max_delay=0.002, deadline=5.0)

Step = Mapping[str, Any] | tuple[int, Any] | type[httpx.RequestError] | httpx.Response


def ivh_ok(payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A successful IVH envelope (PROTOCOL A.1)."""
    body = {"ReqId": "d7aa08da33dd4a662ad5be508c5b77cf", **(payload or {})}
    return {"Header": {"Code": 0, "Message": "", "RequestID": "123"}, "Payload": body}


def ivh_err(code: int, message: str = "error") -> dict[str, Any]:
    """A failed IVH envelope."""
    return {"Header": {"Code": code, "Message": message, "RequestID": "123"}, "Payload": {}}


def desk_ok(**fields: Any) -> dict[str, Any]:
    """A successful Desk envelope (PROTOCOL B.1)."""
    return {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0, **fields}


def desk_err(code: int, info: str = "error") -> dict[str, Any]:
    """A failed Desk envelope: HTTP 200 all the same."""
    return {"ActionStatus": "FAIL", "ErrorInfo": info, "ErrorCode": code}


class Script:
    """Answers requests with the scripted steps in order (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        self.steps = list(steps)
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if isinstance(step, httpx.Response):
            return step
        if isinstance(step, type):
            raise step("scripted failure", request=request)
        if isinstance(step, tuple):
            status, body = step
            if isinstance(body, str):
                return httpx.Response(status, text=body)
            return httpx.Response(status, json=body)
        return httpx.Response(200, json=dict(step))

    @property
    def calls(self) -> int:
        """How many requests arrived."""
        return len(self.requests)

    def body(self, n: int = -1) -> Any:
        """The JSON body of request `n`."""
        return json.loads(self.requests[n].content)


class Records(list[CallRecord]):
    """A `CallObserver` keeping every record."""

    def __call__(self, record: CallRecord, /) -> None:
        self.append(record)


def http_client(handler: Callable[[httpx.Request], httpx.Response]) -> httpx.AsyncClient:
    """An AsyncClient answering through `handler`."""
    return httpx.AsyncClient(transport=httpx.MockTransport(handler))


def ivh_client(
    script: Script, *, retry: RetryPolicy = FAST, observer: CallObserver | None = None
) -> IvhClient:
    """An IvhClient on `script`."""
    return IvhClient(
        http_client(script),
        base_url=IVH_BASE,
        appkey=APPKEY,
        access_token=TOKEN,
        retry=retry,
        observer=observer,
    )


def desk_client(
    script: Script,
    *,
    retry: RetryPolicy = FAST,
    observer: CallObserver | None = None,
    clock: Callable[[], float] | None = None,
) -> DeskClient:
    """A DeskClient on `script`."""
    return DeskClient(
        http_client(script),
        base_url=DESK_BASE,
        sdkappid=SDKAPPID,
        identifier=IDENTIFIER,
        secret_key=SECRET_KEY,
        retry=retry,
        observer=observer,
        clock=clock or time.time,
    )


class Ticker:
    """A clock advancing one second per reading, from `start`."""

    def __init__(self, start: float = 1_700_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        self.now += 1
        return self.now


def decode_usersig(usersig: str) -> dict[str, Any]:
    """An independent TLSSigAPIv2 decoder: undo Tencent's base64 variant, inflate, parse."""
    standard = usersig.replace("*", "+").replace("-", "/").replace("_", "=")
    document: dict[str, Any] = json.loads(zlib.decompress(base64.b64decode(standard)))
    return document


def expected_tls_sig(document: Mapping[str, Any], secret_key: str) -> str:
    """Recompute `TLS.sig` from a decoded UserSig's fields (PROTOCOL B.2 step 2-3)."""
    content = "".join(
        f"TLS.{name}:{document['TLS.' + name]}\n"
        for name in ("identifier", "sdkappid", "time", "expire")
    )
    digest = hmac.new(secret_key.encode(), content.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()
