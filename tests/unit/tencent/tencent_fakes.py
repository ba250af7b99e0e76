"""A scripted `HttpSession` and real-shaped Tencent replies for client tests.

The script answers at the session's boundary, as aiohttp would: a status and a body, or one of
aiohttp's own exceptions, built as aiohttp builds them (their texts hold the signed URL, as the
real ones do). tests/integration/tencent/test_tencent_sockets.py makes the same failures
happen over real sockets.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import ssl
import time
import zlib
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp.client_reqrep import ConnectionKey, RequestInfo
from multidict import CIMultiDict, CIMultiDictProxy
from yarl import URL

from bridge.core.observe import CallObserver, CallRecord
from bridge.tencent.desk import DeskClient
from bridge.tencent.ivh import IvhClient
from bridge.tencent.retry import RetryPolicy
from bridge.tencent.session import HttpSession

APPKEY = "e38267c0e86411ebb02aed82acb0ed99"
TOKEN = "f68f2d10ae9e4604b76fb05cf46bccec"
SDKAPPID = 1400000000
IDENTIFIER = "administrator"
SECRET_KEY = "5bd2850fff3ecb11d7c805251c51ee463a25727bddc2385f3fa8bfee1bb93b5e"
IVH_BASE = "https://gw.tvs.qq.com"
DESK_BASE = "https://console.tim.qq.com"
FAST = RetryPolicy(attempts=4, initial_delay=0.001, max_delay=0.002, deadline=5.0)


@dataclass(frozen=True)
class Sent:
    """One request as the session was asked to send it."""

    url: URL
    headers: CIMultiDictProxy[str]
    content: bytes


Failure = Callable[[Sent], BaseException]


def _headers(headers: Mapping[str, str]) -> CIMultiDictProxy[str]:
    return CIMultiDictProxy(CIMultiDict(headers))


def _key(sent: Sent) -> ConnectionKey:
    port = sent.url.port or 443
    return ConnectionKey(sent.url.host or "", port, True, True, None, None, None)


def refused(sent: Sent) -> BaseException:
    """Connection refused: nothing sent."""
    return aiohttp.ClientConnectorError(_key(sent), ConnectionRefusedError(111, "refused"))


def connect_timeout(sent: Sent) -> BaseException:
    """No connection (or free slot) in time: nothing sent. aiohttp's text names the URL."""
    return aiohttp.ConnectionTimeoutError(f"Connection timeout to host {sent.url}")


def read_timeout(sent: Sent) -> BaseException:
    """Sent, no answer in time."""
    return aiohttp.SocketTimeoutError("Timeout on reading data from socket")


def dropped(sent: Sent) -> BaseException:
    """Sent, the server closed the connection without an answer."""
    return aiohttp.ServerDisconnectedError()


def reset(sent: Sent) -> BaseException:
    """Sent, the connection was reset."""
    return aiohttp.ClientOSError(104, "Connection reset by peer")


def garbled(sent: Sent) -> BaseException:
    """Sent, the answer is not HTTP. aiohttp's text names the URL."""
    info = RequestInfo(sent.url, "POST", CIMultiDictProxy(CIMultiDict()), sent.url)
    return aiohttp.ClientResponseError(info, (), status=400, message="Invalid constant string")


def truncated(sent: Sent) -> BaseException:
    """Sent, the body ended early (or did not decompress)."""
    return aiohttp.ClientPayloadError("Response payload is not completed")


def bad_scheme(sent: Sent) -> BaseException:
    """A URL no request can be made for: nothing sent."""
    return aiohttp.NonHttpUrlClientError(sent.url)


def untrusted(sent: Sent) -> BaseException:
    """The server's certificate did not verify: nothing sent."""
    cert = ssl.SSLCertVerificationError(1, "certificate verify failed: self-signed certificate")
    return aiohttp.ClientConnectorCertificateError(_key(sent), cert)


Step = Mapping[str, Any] | tuple[int, Any] | Failure


def ivh_ok(payload: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """A successful IVH envelope (docs/protocol.md A.1)."""
    body = {"ReqId": "d7aa08da33dd4a662ad5be508c5b77cf", **(payload or {})}
    return {"Header": {"Code": 0, "Message": "", "RequestID": "123"}, "Payload": body}


def ivh_err(code: int, message: str = "error") -> dict[str, Any]:
    """A failed IVH envelope."""
    return {"Header": {"Code": code, "Message": message, "RequestID": "123"}, "Payload": {}}


def desk_ok(**fields: Any) -> dict[str, Any]:
    """A successful Desk envelope (docs/protocol.md B.1)."""
    return {"ActionStatus": "OK", "ErrorInfo": "", "ErrorCode": 0, **fields}


def desk_err(code: int, info: str = "error") -> dict[str, Any]:
    """A failed Desk envelope: HTTP 200 all the same."""
    return {"ActionStatus": "FAIL", "ErrorInfo": info, "ErrorCode": code}


class Script(HttpSession):
    """Answers requests with the scripted steps in order (the last one repeats)."""

    def __init__(self, *steps: Step) -> None:
        super().__init__(timeout=1.0)
        self.steps = list(steps)
        self.requests: list[Sent] = []

    async def post(
        self, url: str, query: str, content: bytes, headers: Mapping[str, str]
    ) -> tuple[int, bytes]:
        """The next step's answer, or its exception."""
        sent = await self._record(url, query, content, headers)
        step = self.steps[min(len(self.requests), len(self.steps)) - 1]
        if callable(step):
            raise step(sent)
        if isinstance(step, tuple):
            status, body = step
            raw = body.encode() if isinstance(body, str) else json.dumps(body).encode()
            return status, raw
        return 200, json.dumps(dict(step)).encode()

    async def _record(
        self, url: str, query: str, content: bytes, headers: Mapping[str, str]
    ) -> Sent:
        target = URL(f"{url}?{query}" if query else url, encoded=True)
        sent = Sent(target, _headers(headers), content)
        self.requests.append(sent)
        return sent

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


def ivh_client(
    script: Script, *, retry: RetryPolicy = FAST, observer: CallObserver | None = None
) -> IvhClient:
    """An IvhClient on `script`."""
    return IvhClient(
        script,
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
        script,
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
    """Recompute `TLS.sig` from a decoded UserSig's fields (docs/protocol.md B.2 step 2-3)."""
    content = "".join(
        f"TLS.{name}:{document['TLS.' + name]}\n"
        for name in ("identifier", "sdkappid", "time", "expire")
    )
    digest = hmac.new(secret_key.encode(), content.encode(), hashlib.sha256).digest()
    return base64.b64encode(digest).decode()
