"""The HTTP plumbing both clients share: one request, error mapping, retries and observation.

Error messages name the service and the API and never the URL: IVH URLs carry a signature and
Desk URLs a UserSig (a bearer credential), so neither may reach a message or a log line.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import httpx

from bridge.core import jsontext
from bridge.core.observe import CallObserver, CallRecord, Service, notify
from bridge.errors import BridgeError, UpstreamError
from bridge.tencent.codes import CodeInfo, http_status_info
from bridge.tencent.lean import LeanClient
from bridge.tencent.retry import RetryPolicy, call_with_retry
from bridge.tencent.signing import IvhAuth, query_string

logger = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAMES: Mapping[Service, str] = {"ivh": "IVH", "desk": "Desk"}
JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json;charset=utf-8"}
BAD_REPLY = CodeInfo("upstream_error", False, "unexpected response")
_TIMEOUT = CodeInfo("timeout", True, "timed out")
_UNREACHABLE = CodeInfo("upstream_unavailable", True, "cannot reach the gateway")
_BAD_SCHEME = CodeInfo("upstream_unavailable", False, "unsupported URL scheme")
_CLIENT_FAILURE = CodeInfo("upstream_error", False, "HTTP client error")
# Failures before a connection exists: not one byte of the request can have left the process.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout)


@dataclass(kw_only=True)
class CallContext:
    """One logical call: its name, its HTTP requests so far, and whether one may have applied."""

    service: Service
    api: str
    requests: int = 0
    maybe_applied: bool = False  # an earlier request failed with an unknown outcome


C = TypeVar("C", bound=CallContext)


@dataclass(frozen=True, slots=True)
class Reply:
    """One HTTP answer: its status and its body when that is a JSON object."""

    status: int
    body: Mapping[str, Any] | None


def dumps(body: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON: the exact bytes sent (Desk's 12 KB limit counts them)."""
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def code_error(
    info: CodeInfo,
    ctx: CallContext,
    *,
    upstream_code: int | None = None,
    http_status: int | None = None,
) -> UpstreamError:
    """The error for `info`, worded from the API name and the code only."""
    message = f"{SERVICE_NAMES[ctx.service]} {ctx.api} failed: {info.message}"
    if upstream_code is not None:
        message += f" (code {upstream_code})"
    return UpstreamError(
        message,
        code=info.code,
        retryable=info.retryable,
        upstream_code=upstream_code,
        http_status=http_status,
    )


def transport_error(exc: httpx.HTTPError, ctx: CallContext) -> UpstreamError:
    """Map an httpx failure: timeout -> `timeout`, no connection -> `upstream_unavailable`."""
    if isinstance(exc, httpx.TimeoutException):
        return code_error(_TIMEOUT, ctx)
    if isinstance(exc, httpx.UnsupportedProtocol):
        return code_error(_BAD_SCHEME, ctx)
    if isinstance(exc, httpx.TransportError):
        return code_error(_UNREACHABLE, ctx)
    return code_error(_CLIENT_FAILURE, ctx)


def never_sent(exc: BaseException) -> bool:
    """Whether `exc` came from a request that cannot have reached the server."""
    return isinstance(exc.__cause__, _NOT_SENT)


def outcome_unknown(exc: Exception) -> bool:
    """Whether the request that raised `exc` may have been applied by the server.

    Known not applied: a parsed envelope with an error code, an HTTP 4xx (a rejection), or a
    request that was never sent. Anything else (timeout, dropped connection, a bare 5xx) may be.
    """
    if not isinstance(exc, UpstreamError) or exc.upstream_code is not None or never_sent(exc):
        return False
    return exc.http_status is None or exc.http_status >= 500


def is_retryable(exc: Exception) -> bool:
    """The default rule: a bridge error that says it is retryable."""
    return isinstance(exc, BridgeError) and exc.retryable


def scrub(text: object, secrets: Iterable[str], limit: int = 200) -> str:
    """Upstream text for a log line: secrets replaced, length capped."""
    result = str(text)[:limit]
    for secret in secrets:
        if secret:
            result = result.replace(secret, "***")
    return result


async def post(
    http: httpx.AsyncClient,
    ctx: CallContext,
    url: str,
    *,
    content: bytes,
    params: Mapping[str, str] | None = None,
    auth: httpx.Auth | None = None,
) -> Reply:
    """POST `content` once; transport failures become `UpstreamError`s."""
    ctx.requests += 1
    try:
        if isinstance(http, LeanClient) and (auth is None or isinstance(auth, IvhAuth)):
            query = auth.query(params or {}) if auth else query_string(params or {})
            status, raw = await http.post_bytes(url, query, content, JSON_HEADERS)
            return Reply(status, _json_bytes(raw))
        how = auth if auth is not None else httpx.USE_CLIENT_DEFAULT
        response = await http.post(
            url, content=content, headers=JSON_HEADERS, params=params, auth=how
        )
    except httpx.HTTPError as exc:
        raise transport_error(exc, ctx) from exc
    return Reply(response.status_code, _json_bytes(response.content))


def check_reply(
    reply: Reply, ctx: CallContext, code: int | None, lookup: Callable[[int], CodeInfo]
) -> None:
    """Raise for a non-zero upstream code, then an HTTP error status, then a missing code."""
    if code:
        raise code_error(lookup(code), ctx, upstream_code=code, http_status=reply.status)
    if reply.status >= 300:
        raise code_error(http_status_info(reply.status), ctx, http_status=reply.status)
    if code is None:
        raise code_error(BAD_REPLY, ctx, http_status=reply.status)


def _json_bytes(raw: bytes) -> Mapping[str, Any] | None:
    try:
        body = jsontext.loads(raw)
    except ValueError:
        return None
    return body if isinstance(body, dict) else None


async def run_call(
    attempt: Callable[[C], Awaitable[T]],
    ctx: C,
    *,
    policy: RetryPolicy,
    observer: CallObserver | None,
    retryable: Callable[[Exception], bool] = is_retryable,
    min_delay: Callable[[Exception], float] | None = None,
) -> T:
    """Run `attempt` under `policy` and report one `CallRecord` to `observer`."""
    started, outcome = time.monotonic(), "cancelled"
    try:
        result = await call_with_retry(
            lambda: attempt(ctx),
            policy=policy,
            is_retryable=retryable,
            on_retry=lambda n, exc, delay: _on_retry(ctx, n, exc, delay),
            min_delay=min_delay,
        )
        outcome = "ok"
        return result
    except BridgeError as exc:
        outcome = exc.code
        raise
    except Exception:
        outcome = "internal_error"
        raise
    finally:
        notify(observer, _record(ctx, time.monotonic() - started, outcome))


def _record(ctx: CallContext, elapsed: float, outcome: str) -> CallRecord:
    attempts = ctx.requests
    return CallRecord(
        service=ctx.service,
        api=ctx.api,
        elapsed=elapsed,
        outcome=outcome,
        attempts=attempts,
        retries=max(attempts - 1, 0),
    )


def _on_retry(ctx: CallContext, attempt: int, exc: Exception, delay: float) -> None:
    ctx.maybe_applied = ctx.maybe_applied or outcome_unknown(exc)
    code = exc.code if isinstance(exc, BridgeError) else type(exc).__name__
    upstream = exc.upstream_code if isinstance(exc, BridgeError) else None
    logger.info(
        "%s %s attempt %d failed (%s, upstream code %s); retrying in %.2f s",
        SERVICE_NAMES[ctx.service],
        ctx.api,
        attempt,
        code,
        upstream,
        delay,
    )
