"""The error tree: every failure the bridge reports carries a stable docs/topics.md error code.

    BridgeError                 code, message, retryable, upstream_code, http_status
     +-- RequestError           the request itself is wrong (invalid_json, invalid_payload, ...)
     +-- UpstreamError          a Tencent API answered with an error or could not be reached
     +-- ChannelError           the IVH command channel is not available (channel_unavailable)

Messages are human sentences and never contain a secret: callers build them from codes and
ids, never from credentials, URLs with signatures, or raw upstream bodies.
"""

from __future__ import annotations

from typing import Any, Literal, get_args

from pydantic import ValidationError

ErrorCode = Literal[
    "invalid_json",
    "invalid_payload",
    "invalid_session_id",
    "unknown_action",
    "retained_command",
    "payload_too_large",
    "expired",
    "session_not_found",
    "session_closed",
    "channel_unavailable",
    "upstream_error",
    "upstream_unavailable",
    "auth_failed",
    "rate_limited",
    "timeout",
    "service_disabled",
    "shutting_down",
    "internal_error",
]

# What `tencent2mqtt_actions_total{outcome}` may say besides "ok": every code, and a message on
# a subscribed topic that names no action.
OUTCOMES = frozenset({*get_args(ErrorCode), "bad_topic"})


class BridgeError(Exception):
    """A failure with a stable error code, reported to MQTT clients in the response envelope."""

    code: ErrorCode = "internal_error"
    retryable: bool = False

    def __init__(
        self,
        message: str,
        *,
        code: ErrorCode | None = None,
        retryable: bool | None = None,
        upstream_code: int | None = None,
        http_status: int | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        if code is not None:
            self.code = code
        if retryable is not None:
            self.retryable = retryable
        self.upstream_code = upstream_code
        self.http_status = http_status

    def to_dict(self) -> dict[str, Any]:
        """The `error` object of the docs/topics.md response envelope."""
        return {
            "code": self.code,
            "message": self.message,
            "retryable": self.retryable,
            "upstream_code": self.upstream_code,
            "http_status": self.http_status,
        }

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(code={self.code!r}, message={self.message!r}, "
            f"upstream_code={self.upstream_code!r}, http_status={self.http_status!r})"
        )


class RequestError(BridgeError):
    """The request is wrong; retrying the same request cannot succeed."""

    code: ErrorCode = "invalid_payload"


class UpstreamError(BridgeError):
    """A Tencent API failed: a non-zero code, an HTTP error, a timeout or no connection."""

    code: ErrorCode = "upstream_error"


class ChannelError(BridgeError):
    """The IVH command channel of a session cannot carry a drive right now."""

    code: ErrorCode = "channel_unavailable"
    retryable = True


def validation_problems(exc: ValidationError, *, whole: str) -> list[str]:
    """One `key: problem` line per error, never echoing the input; `whole` names the root."""
    lines = []
    for err in exc.errors(include_url=False, include_input=False):
        key = ".".join(str(part) for part in err["loc"]) or whole
        lines.append(f"{key}: {err['msg'].removeprefix('Value error, ')}")
    return lines
