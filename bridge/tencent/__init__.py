"""Typed async clients for the Tencent Cloud APIs: IVH session manager and Desk REST.

signing.py   IVH signature (docs/protocol.md A.2), command-channel URL, `IvhAuth`
usersig.py   Desk admin UserSig (docs/protocol.md B.2) and its renewing cache
codes.py     upstream code -> SPEC error code + retry decision (docs/protocol.md A.7, B.7)
retry.py     `RetryPolicy` and `call_with_retry`
transport.py one request, error mapping, the retry/observe loop both clients share
models.py    typed results
ivh.py       `IvhClient`;  desk.py  `DeskClient`
observe.py   `CallRecord` / `CallObserver` for metrics
redact.py    a log filter hiding `usersig=` / `signature=` values
"""

from __future__ import annotations

from bridge.core.observe import CallObserver, CallRecord
from bridge.tencent.desk import MAX_BODY_BYTES, DeskClient, stream_body_size
from bridge.tencent.ivh import IvhClient
from bridge.tencent.models import (
    CreatedSession,
    DeskSessionState,
    DeskState,
    SessionInfo,
    SessionStat,
    normalise_desk_state,
    status_name,
)
from bridge.tencent.redact import RedactQueryFilter
from bridge.tencent.retry import RetryPolicy, call_with_retry
from bridge.tencent.signing import IvhAuth, channel_url, default_channel_url, ivh_query
from bridge.tencent.usersig import UserSigCache, gen_usersig

__all__ = [
    "MAX_BODY_BYTES",
    "CallObserver",
    "CallRecord",
    "CreatedSession",
    "DeskClient",
    "DeskSessionState",
    "DeskState",
    "IvhAuth",
    "IvhClient",
    "RedactQueryFilter",
    "RetryPolicy",
    "SessionInfo",
    "SessionStat",
    "UserSigCache",
    "call_with_retry",
    "channel_url",
    "default_channel_url",
    "gen_usersig",
    "ivh_query",
    "normalise_desk_state",
    "status_name",
    "stream_body_size",
]
