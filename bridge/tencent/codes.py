"""Upstream result codes -> docs/topics.md error codes and retry decisions (docs/protocol.md A.7,
B.4, B.7).

Each entry says what the bridge reports (`code`), whether the same request may succeed if tried
again (`retryable`), and a short human message. Unknown non-zero codes are `upstream_error`, not
retryable: retrying an error we do not understand risks repeating a side effect for nothing.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from bridge.errors import ErrorCode


@dataclass(frozen=True, slots=True)
class CodeInfo:
    """What one upstream code means to the bridge."""

    code: ErrorCode
    retryable: bool
    message: str
    regenerate_usersig: bool = False  # Desk 60004/60005/70001/70003: regenerate, retry once (B.7)
    min_delay: float = 0.0  # the shortest sensible wait before a retry, in seconds


_AUTH: ErrorCode = "auth_failed"
_UPSTREAM: ErrorCode = "upstream_error"
_RATE: ErrorCode = "rate_limited"
_INVALID: ErrorCode = "invalid_payload"

# docs/protocol.md A.7. Concurrency errors (100008, 100014) are rate_limited but NOT retryable: a
# slot
# frees only when a session is closed, which a backoff of seconds cannot wait for.
IVH_CODES: Mapping[int, CodeInfo] = {
    -101000: CodeInfo(_UPSTREAM, True, "internal system error"),
    -101001: CodeInfo(_UPSTREAM, True, "not enough compute for the digital-human service"),
    -101002: CodeInfo(_UPSTREAM, True, "image download failed"),
    -111001: CodeInfo(_UPSTREAM, True, "updating stream parameters failed"),
    -111002: CodeInfo(_UPSTREAM, False, "connection dropped abnormally"),
    -111003: CodeInfo(_UPSTREAM, False, "loading the avatar model failed; recreate the session"),
    -111004: CodeInfo(_UPSTREAM, False, "stream creation timed out; recreate the session"),
    -111005: CodeInfo(_UPSTREAM, False, "driving with text or audio failed"),
    100001: CodeInfo(_INVALID, False, "bad request parameters"),
    100005: CodeInfo(_AUTH, False, "unauthorised operation"),
    100008: CodeInfo(_RATE, False, "concurrency limit exceeded; close stale sessions"),
    100012: CodeInfo(_RATE, True, "requests too frequent"),
    100014: CodeInfo(_RATE, False, "concurrency quota insufficient or expired"),
    100015: CodeInfo(_UPSTREAM, False, "avatar expired"),
    110013: CodeInfo("session_closed", False, "session already closed"),
    110014: CodeInfo(_UPSTREAM, False, "session not ready: wait for status 1 and start it"),
    110015: CodeInfo(_UPSTREAM, False, "instruction sent at the wrong time"),
    110016: CodeInfo(_UPSTREAM, False, "session was never started"),
    110018: CodeInfo("session_not_found", False, "session does not exist"),
    110021: CodeInfo(_UPSTREAM, False, "TRTC service in arrears or out of minutes"),
    110022: CodeInfo(
        "session_closed", False, "session replaced by a newer one with the same UserId"
    ),
}

# docs/protocol.md B.7 (common Chat REST codes), B.3 and B.4 (send_stream_msg codes from the seed
# page).
DESK_CODES: Mapping[int, CodeInfo] = {
    20001: CodeInfo(_INVALID, False, "invalid request packet"),
    20002: CodeInfo(_AUTH, False, "UserSig invalid"),
    20003: CodeInfo(_UPSTREAM, False, "sender or recipient UserID invalid"),
    20004: CodeInfo(_UPSTREAM, True, "network issue at the gateway"),
    20005: CodeInfo(_UPSTREAM, True, "internal server error"),
    20006: CodeInfo(_UPSTREAM, False, "message rejected by the app's callback"),
    60002: CodeInfo(_UPSTREAM, False, "bad URL format"),
    60003: CodeInfo(_INVALID, False, "request JSON parse error"),
    60004: CodeInfo(_AUTH, False, "bad account or signature", regenerate_usersig=True),
    60005: CodeInfo(_AUTH, False, "bad account or signature", regenerate_usersig=True),
    60006: CodeInfo(_AUTH, False, "SDKAppID invalid"),
    60007: CodeInfo(_RATE, True, "REST call frequency limit exceeded"),
    60008: CodeInfo(_UPSTREAM, True, "service timeout"),
    60009: CodeInfo(_UPSTREAM, False, "bad resource URL"),
    60010: CodeInfo(_AUTH, False, "identifier is not an App administrator"),
    60011: CodeInfo(_RATE, True, "SDKAppID request frequency limit exceeded"),
    60012: CodeInfo(_UPSTREAM, False, "SDKAppID missing from the URL"),
    60013: CodeInfo(_UPSTREAM, True, "response JSON parse error"),
    60014: CodeInfo(_UPSTREAM, True, "account exchange timeout"),
    60015: CodeInfo(_UPSTREAM, False, "account type must be a string"),
    60016: CodeInfo(_AUTH, False, "SDKAppID disabled"),
    60017: CodeInfo(_UPSTREAM, False, "request disabled"),
    60018: CodeInfo(_RATE, True, "too frequent, retry later"),
    60019: CodeInfo(_RATE, True, "too frequent, retry later"),
    60020: CodeInfo(_UPSTREAM, False, "package or plan expired"),
    60021: CodeInfo(_AUTH, False, "caller IP not allowed"),
    70001: CodeInfo(_AUTH, False, "UserSig expired", regenerate_usersig=True),
    70003: CodeInfo(_AUTH, False, "UserSig parse failed", regenerate_usersig=True),
    70009: CodeInfo(_AUTH, False, "UserSig verification failed (wrong key or SDKAppID)"),
    70013: CodeInfo(_AUTH, False, "identifier differs from the UserSig's"),
    70014: CodeInfo(_AUTH, False, "SDKAppID differs from the UserSig's"),
    70016: CodeInfo(_AUTH, False, "key not found (data-centre mismatch?)"),
    70020: CodeInfo(_AUTH, False, "SDKAppID not found (data-centre mismatch?)"),
    # Retried only if a 60 s wait still fits the call's deadline (B.7: "wait 1 minute").
    70050: CodeInfo(_RATE, True, "UserSig failures rate-limited; wait a minute", min_delay=60.0),
    70051: CodeInfo(_AUTH, False, "account blacklisted"),
    70107: CodeInfo(_AUTH, False, "identifier not imported into IM"),
    90001: CodeInfo(_INVALID, False, "JSON parse failed"),
    90002: CodeInfo(_UPSTREAM, False, "message body format mismatch"),
    90005: CodeInfo(_UPSTREAM, False, "MsgRandom missing or not an integer"),
    90007: CodeInfo(_UPSTREAM, False, "MsgBody is not an array"),
    90009: CodeInfo(_AUTH, False, "App administrator permission required"),
    90010: CodeInfo(_UPSTREAM, False, "message format mismatch"),
    93000: CodeInfo("payload_too_large", False, "message body over 12 KB"),
    141000: CodeInfo(_UPSTREAM, False, "the app is not a Desk app"),
    141002: CodeInfo(_UPSTREAM, True, "internal error"),
    141004: CodeInfo(_INVALID, False, "invalid parameter"),
    141005: CodeInfo("session_not_found", False, "session does not exist or has ended"),
    141006: CodeInfo(_INVALID, False, "invalid SessionId"),
}

_UNKNOWN = CodeInfo(_UPSTREAM, False, "unexpected error code")


def ivh_code(upstream_code: int) -> CodeInfo:
    """The meaning of an IVH `Header.Code` (docs/protocol.md A.7); unknown codes are not
    retryable."""
    return IVH_CODES.get(upstream_code, _UNKNOWN)


def desk_code(upstream_code: int) -> CodeInfo:
    """The meaning of a Desk `ErrorCode` (docs/protocol.md B.7); unknown codes are not retryable."""
    return DESK_CODES.get(upstream_code, _UNKNOWN)


def http_status_info(status: int) -> CodeInfo:
    """The meaning of an HTTP error status that came without a parsable envelope."""
    if status >= 500:
        return CodeInfo("upstream_unavailable", True, f"HTTP {status} from the gateway")
    if status in (401, 403):
        return CodeInfo(_AUTH, False, f"HTTP {status}: authentication rejected")
    if status == 429:
        return CodeInfo(_RATE, True, "HTTP 429: too many requests")
    return CodeInfo(_UPSTREAM, False, f"HTTP {status} from the gateway")
