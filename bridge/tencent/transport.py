"""The HTTP plumbing both clients share: one request, error mapping, retries and observation.

Error messages name the service and the API and never the URL: IVH URLs carry a signature and
Desk URLs a UserSig (a bearer credential), so neither may reach a message or a log line.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from bridge.core import jsontext
from bridge.core.observe import CallObserver, CallRecord, Service, notify
from bridge.errors import BridgeError, UpstreamError
from bridge.tencent.codes import CodeInfo, http_status_info
from bridge.tencent.redact import redact_query
from bridge.tencent.retry import RetryPolicy, call_with_retry
from bridge.tencent.session import HttpSession, SessionClosed

logger = logging.getLogger(__name__)

T = TypeVar("T")

SERVICE_NAMES: Mapping[Service, str] = {"ivh": "IVH", "desk": "Desk"}
JSON_HEADERS: Mapping[str, str] = {"Content-Type": "application/json;charset=utf-8"}
BAD_REPLY = CodeInfo("upstream_error", False, "unexpected response")
_TIMEOUT = CodeInfo("timeout", True, "timed out")
_UNREACHABLE = CodeInfo("upstream_unavailable", True, "cannot reach the gateway")
_BAD_SCHEME = CodeInfo("upstream_unavailable", False, "unsupported URL scheme")
_UNTRUSTED = CodeInfo("upstream_unavailable", False, "TLS certificate not trusted")
_CLIENT_FAILURE = CodeInfo("upstream_error", False, "HTTP client error")
# Failures before a connection to the server exists (connect errors and timeouts, a proxy that
# refused the tunnel, a URL no request can be made for): not one byte can have reached it.
_NOT_SENT = (
    aiohttp.ClientConnectorError,  # DNS, refused, TLS handshake and certificate, proxy connect
    aiohttp.ConnectionTimeoutError,  # a free slot and the connection, within the timeout
    aiohttp.ClientHttpProxyError,  # the proxy answered CONNECT with an error
    aiohttp.NonHttpUrlClientError,
    aiohttp.InvalidUrlClientError,
    SessionClosed,
    ValueError,  # a URL that cannot be sent (aiohttp's InvalidURL is one)
)


class TransportFailure(Exception):
    """The cause of a transport `UpstreamError`: the client's exception, by type and redacted
    text. aiohttp's exceptions carry the request URL, which holds the IVH signature or the
    Desk UserSig, so they are never chained themselves (a traceback would print them)."""

    def __init__(self, exc: BaseException) -> None:
        self.kind = type(exc).__name__
        self.sent = not isinstance(exc, _NOT_SENT)
        super().__init__(f"{self.kind}: {redact_query(str(exc))[:300]}")


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
    return jsontext.dumps(body, separators=(",", ":")).encode("utf-8")


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


def transport_error(exc: BaseException, ctx: CallContext) -> UpstreamError:
    """Map a client failure: timeout -> `timeout`, no connection -> `upstream_unavailable`.

    The error's cause is a `TransportFailure`, never `exc` itself (see there)."""
    error = code_error(_transport_info(exc), ctx)
    error.__cause__ = TransportFailure(exc)
    return error


def _transport_info(exc: BaseException) -> CodeInfo:
    if isinstance(exc, TimeoutError):  # aiohttp's connect and read timeouts included
        return _TIMEOUT
    if isinstance(exc, aiohttp.NonHttpUrlClientError | aiohttp.InvalidUrlClientError):
        return _BAD_SCHEME
    if isinstance(exc, aiohttp.ClientConnectorCertificateError):
        return _UNTRUSTED
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError):
        return _UNREACHABLE
    if isinstance(exc, aiohttp.ClientResponseError):  # a response that is not HTTP
        return _UNREACHABLE
    return _CLIENT_FAILURE


def never_sent(exc: BaseException) -> bool:
    """Whether `exc` came from a request that cannot have reached the server."""
    cause = exc.__cause__
    return isinstance(cause, TransportFailure) and not cause.sent


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
    http: HttpSession, ctx: CallContext, url: str, *, content: bytes, query: str = ""
) -> Reply:
    """POST `content` once; transport failures become `UpstreamError`s."""
    ctx.requests += 1
    try:
        status, raw = await http.post(url, query, content, JSON_HEADERS)
    except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
        failure = transport_error(exc, ctx)
    else:
        return Reply(status, _json_bytes(raw))
    raise failure  # outside the handler: aiohttp's exception is not even its context


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
    # Debug: one line per attempt of every call; the service's condition is logged once per
    # change (bridge.core.condition).
    logger.debug(
        "%s %s attempt %d failed (%s, upstream code %s); retrying in %.2f s",
        SERVICE_NAMES[ctx.service],
        ctx.api,
        attempt,
        code,
        upstream,
        delay,
    )
