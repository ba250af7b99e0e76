"""The Desk REST client (docs/protocol.md B.1-B.4, B.7) over an injected `HttpSession`.

URL: `<base>/v4/desk_http_svc/<command>?sdkappid=&identifier=&usersig=&random=&contenttype=json`
with a fresh 32-bit `random` per request. HTTP 200 can still be an error: the result is the
body's `ErrorCode` (B.1). 60004/60005/70001/70003 regenerate the UserSig once per call, then
retry once.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import SecretStr

from bridge.core.observe import CallObserver
from bridge.errors import ErrorCode, RequestError, UpstreamError
from bridge.tencent.codes import desk_code
from bridge.tencent.desk_handover import (
    ORDER_CODES,
    ChatMessage,
    Order,
    TransferRequest,
    chat_message,
)
from bridge.tencent.models import DeskSessionState, as_int, normalise_desk_state
from bridge.tencent.retry import DEFAULT_RETRY, RetryPolicy
from bridge.tencent.session import HttpSession
from bridge.tencent.signing import query_string
from bridge.tencent.transport import (
    BAD_REPLY,
    CallContext,
    check_reply,
    code_error,
    dumps,
    is_retryable,
    never_sent,
    post,
    run_call,
    scrub,
)
from bridge.tencent.usersig import UserSigCache

logger = logging.getLogger(__name__)

DESK_PATH = "/v4/desk_http_svc/"
# send_stream_msg: error 93000 when "the message body" exceeds "12k" (docs/protocol.md B.4). Kept to
# 12,000 bytes, which is under 12 KB however a server counts it.
MAX_BODY_BYTES = 12_000


def stream_body(
    session_id: str,
    chunk: str,
    msg_key: str | None = None,
    finish: bool = False,
    cloud_custom_data: str | None = None,
) -> dict[str, Any]:
    """The `send_stream_msg` body: MsgKey from the second call on, Finish=1 on the last."""
    body: dict[str, Any] = {"SessionId": session_id, "Chunk": chunk}
    if msg_key is not None:
        body["MsgKey"] = msg_key
    if finish:
        body["Finish"] = 1
    if cloud_custom_data is not None:
        body["CloudCustomData"] = cloud_custom_data
    return body


def stream_body_size(
    session_id: str,
    chunk: str,
    msg_key: str | None = None,
    finish: bool = False,
    cloud_custom_data: str | None = None,
) -> int:
    """The exact size in bytes of the body `send_stream_msg` would send."""
    return len(dumps(stream_body(session_id, chunk, msg_key, finish, cloud_custom_data)))


def stream_retryable(exc: Exception) -> bool:
    """Retry a chunk only where it cannot have been applied, so it is never shown twice.

    send_stream_msg has no idempotency key (MsgKey names the message, not the chunk), so a
    chunk the server applied and that we send again is displayed twice. We retry only when
    (1) no connection was ever made (connect error or connect/pool timeout: not one byte was
    sent), or (2) the server answered with a parsed envelope carrying a documented retryable
    code: it rejected the request. After a read/write timeout, a dropped connection or an HTTP
    5xx without an envelope the outcome is unknown; the error goes to the caller instead.
    """
    if not is_retryable(exc):
        return False
    return isinstance(exc, UpstreamError) and (exc.upstream_code is not None or never_sent(exc))


@dataclass(kw_only=True)
class _DeskCall(CallContext):
    """One logical Desk call: its body, and whether it has used up its UserSig renewal."""

    content: bytes
    ok_on_retry: frozenset[ErrorCode]
    usersig_renewed: bool = False  # at most once per logical call (docs/protocol.md B.7)


def _min_delay(exc: Exception) -> float:
    code = exc.upstream_code if isinstance(exc, UpstreamError) else None
    return desk_code(code).min_delay if code else 0.0


def _renews_usersig(exc: UpstreamError) -> bool:
    return exc.upstream_code is not None and desk_code(exc.upstream_code).regenerate_usersig


class DeskClient:
    """Typed async calls to the Desk REST API (docs/protocol.md B.3-B.5)."""

    def __init__(
        self,
        http: HttpSession,
        *,
        base_url: str,
        sdkappid: int,
        identifier: str,
        secret_key: SecretStr | str,
        usersig_ttl: int = 86400,
        retry: RetryPolicy = DEFAULT_RETRY,
        observer: CallObserver | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + DESK_PATH
        self._sdkappid = sdkappid
        self._identifier = identifier
        self._secret = SecretStr(secret_key) if isinstance(secret_key, str) else secret_key
        self._usersigs = UserSigCache(
            sdkappid=sdkappid,
            identifier=identifier,
            secret_key=self._secret,
            ttl=usersig_ttl,
            clock=clock,
        )
        self._retry = retry
        self._observer = observer

    async def get_session_state(
        self,
        *,
        session_id: str | None = None,
        client_user_id: str | None = None,
        customer_service_id: str | None = None,
    ) -> DeskSessionState:
        """`get_session_state` by SessionId, or by ClientUserId + CustomerServiceId (B.3)."""
        body = _state_query(session_id, client_user_id, customer_service_id)
        reply = await self._call("get_session_state", dumps(body))
        raw = reply.get("CurrentState")
        raw_state = raw if isinstance(raw, str) else None
        return DeskSessionState(
            session_id=_text(reply.get("SessionId")) or session_id,
            state=normalise_desk_state(raw_state),
            raw_state=raw_state,
            agent_id=_text(reply.get("AgentId")),
        )

    async def send_stream_msg(
        self,
        *,
        session_id: str,
        chunk: str,
        msg_key: str | None = None,
        finish: bool = False,
        cloud_custom_data: str | None = None,
    ) -> str | None:
        """`send_stream_msg`; returns the MsgKey of the first response, else `msg_key` (B.4)."""
        content = dumps(stream_body(session_id, chunk, msg_key, finish, cloud_custom_data))
        if len(content) > MAX_BODY_BYTES:
            raise RequestError(
                f"send_stream_msg body is {len(content)} bytes, over {MAX_BODY_BYTES}",
                code="payload_too_large",
            )
        reply = await self._call("send_stream_msg", content, retryable=stream_retryable)
        return _text(reply.get("MsgKey")) or msg_key

    async def end_session(self, session_id: str) -> None:
        """`end_session`: end a session that was transferred to a human (B.5)."""
        # Idempotent: after a retry, "session does not exist" means an earlier attempt ended it.
        gone: frozenset[ErrorCode] = frozenset({"session_not_found"})
        await self._call("end_session", dumps({"SessionId": session_id}), ok_on_retry=gone)

    async def transfer_to_human(self, request: TransferRequest) -> str | None:
        """`transfer_to_human` (B.5); the assigned AgentId when the answer carries one."""
        reply = await self._call("transfer_to_human", dumps(request.body()))
        return _text(reply.get("AgentId"))

    async def describe_chat_messages(
        self, session_id: str, *, limit: int, offset: int, order: Order
    ) -> tuple[int, list[ChatMessage]]:
        """`describe_chat_messages` (B.5): the total count and one page of messages."""
        body = {"SessionId": session_id, "Limit": limit, "Offset": offset}
        body["Order"] = ORDER_CODES[order]
        reply = await self._call("describe_chat_messages", dumps(body))
        raw = reply.get("Messages")
        messages = (
            [chat_message(m) for m in raw if isinstance(m, Mapping)]
            if isinstance(raw, list)
            else []
        )
        return as_int(reply.get("TotalCount")) or len(messages), messages

    async def _call(
        self,
        api: str,
        content: bytes,
        *,
        retryable: Callable[[Exception], bool] = is_retryable,
        ok_on_retry: frozenset[ErrorCode] = frozenset(),
    ) -> Mapping[str, Any]:
        call = _DeskCall(service="desk", api=api, content=content, ok_on_retry=ok_on_retry)
        return await run_call(
            self._attempt,
            call,
            policy=self._retry,
            observer=self._observer,
            retryable=retryable,
            min_delay=_min_delay,
        )

    async def _attempt(self, call: _DeskCall) -> Mapping[str, Any]:
        usersig = self._usersigs.get()
        try:
            return await self._post_once(call, usersig)
        except UpstreamError as exc:
            if call.maybe_applied and exc.code in call.ok_on_retry:
                return {}
            if call.usersig_renewed or not _renews_usersig(exc):
                raise
        # 60004/60005/70001/70003 (docs/protocol.md B.7): the request was rejected, so resending is
        # safe.
        call.usersig_renewed = True
        self._usersigs.invalidate(usersig)
        logger.info("Desk %s: UserSig rejected, regenerating it once", call.api)
        return await self._post_once(call, self._usersigs.get())

    async def _post_once(self, ctx: _DeskCall, usersig: str) -> Mapping[str, Any]:
        params = {
            "sdkappid": str(self._sdkappid),
            "identifier": self._identifier,
            "usersig": usersig,
            "random": str(secrets.randbits(32)),  # fresh per request (docs/protocol.md B.1)
            "contenttype": "json",
        }
        query = query_string(params)
        reply = await post(self._http, ctx, self._url + ctx.api, content=ctx.content, query=query)
        body = reply.body or {}
        code = as_int(body.get("ErrorCode"))
        if code:
            self._log_upstream(ctx, code, body.get("ErrorInfo"), usersig)
        check_reply(reply, ctx, code, desk_code)
        if body.get("ActionStatus", "OK") != "OK":
            raise code_error(BAD_REPLY, ctx, http_status=reply.status)
        return body

    def _log_upstream(self, ctx: CallContext, code: int, info: object, usersig: str) -> None:
        text = scrub(info, [self._secret.get_secret_value(), usersig])
        logger.debug("Desk %s returned code %d: %s", ctx.api, code, text)

    def __repr__(self) -> str:
        return (
            f"DeskClient(base_url={self._url!r}, sdkappid={self._sdkappid}, "
            f"identifier={self._identifier!r})"
        )


def _state_query(
    session_id: str | None, client_user_id: str | None, customer_service_id: str | None
) -> dict[str, str]:
    """Exactly one of the two request forms of docs/protocol.md B.3."""
    by_user = client_user_id is not None or customer_service_id is not None
    if session_id is not None and not by_user:
        return {"SessionId": session_id}
    if session_id is None and client_user_id is not None and customer_service_id is not None:
        return {"ClientUserId": client_user_id, "CustomerServiceId": customer_service_id}
    raise RequestError(
        "give either session_id, or client_user_id and customer_service_id", code="invalid_payload"
    )


def _text(value: object) -> str | None:
    """A non-empty string, else None (Tencent sends "" for an absent AgentId)."""
    return value if isinstance(value, str) and value else None
