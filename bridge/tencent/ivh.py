"""The IVH session-manager client (docs/protocol.md A.1-A.3, A.7) over an injected `HttpSession`.

Every call POSTs `{"Header": {}, "Payload": {..., "ReqId": <32 hex>}}` to a signed URL and
fails unless `Header.Code` is 0. Timeouts, connection errors, HTTP 5xx and the retryable codes
of A.7 are retried under the `RetryPolicy`; nothing else is.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Mapping
from typing import Any, TypeVar

from pydantic import BaseModel, SecretStr, TypeAdapter, ValidationError

from bridge.core.observe import CallObserver
from bridge.errors import ErrorCode, UpstreamError
from bridge.tencent.codes import ivh_code
from bridge.tencent.models import CreatedSession, SessionInfo, SessionStat, as_int
from bridge.tencent.retry import DEFAULT_RETRY, RetryPolicy
from bridge.tencent.session import HttpSession
from bridge.tencent.signing import IvhAuth
from bridge.tencent.transport import (
    BAD_REPLY,
    CallContext,
    check_reply,
    code_error,
    dumps,
    post,
    run_call,
    scrub,
)

logger = logging.getLogger(__name__)

SESSION_PATH = "/v2/ivh/sessionmanager/sessionmanagerservice/"
M = TypeVar("M", bound=BaseModel)
T = TypeVar("T")
Parser = Callable[[Mapping[str, Any], CallContext], T]
_GONE: frozenset[ErrorCode] = frozenset({"session_closed", "session_not_found"})


class IvhClient:
    """Typed async calls to the IVH session manager (docs/protocol.md A.3)."""

    def __init__(
        self,
        http: HttpSession,
        *,
        base_url: str,
        appkey: str,
        access_token: SecretStr | str,
        retry: RetryPolicy = DEFAULT_RETRY,
        observer: CallObserver | None = None,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + SESSION_PATH
        self._appkey = appkey
        self._token = SecretStr(access_token) if isinstance(access_token, str) else access_token
        self._auth = IvhAuth(appkey=appkey, access_token=self._token)
        self._retry = retry
        self._observer = observer

    async def create_session(
        self,
        *,
        virtualman_project_id: str,
        user_id: str,
        protocol: str,
        driver_type: int,
        extra: Mapping[str, Any] | None = None,
    ) -> CreatedSession:
        """`createsession`; `extra` adds PascalCase fields (ProtocolOption, ExtraInfo, ...)."""
        # Not idempotent, yet retried after a timeout: if the first request did create a
        # session, the retry's session has the same UserId and so closes the orphan (PROTOCOL
        # A.3), which releases its concurrency. The caller gets exactly one live session.
        payload = {
            **(extra or {}),
            "VirtualmanProjectId": virtualman_project_id,
            "UserId": user_id,
            "Protocol": protocol,
            "DriverType": driver_type,
        }
        return await self._call("createsession", payload, _model(CreatedSession))

    async def start_session(self, session_id: str) -> None:
        """`startsession`: arm a ready session for driving (required before the channel)."""
        await self._call("startsession", {"SessionId": session_id}, _nothing)

    async def stat_session(self, session_id: str) -> SessionStat:
        """`statsession`: the status of one session."""
        parse = _model(SessionStat, SessionId=session_id)
        return await self._call("statsession", {"SessionId": session_id}, parse)

    async def close_session(self, session_id: str) -> None:
        """`closesession`: stop the stream and release its concurrency."""
        # Idempotent: if an earlier attempt of this call timed out after closing the session,
        # the retry's "already closed" / "does not exist" is this call's success.
        await self._call("closesession", {"SessionId": session_id}, _nothing, gone_is_ok=True)

    async def list_sessions(self) -> list[SessionInfo]:
        """`listsessionofuin`: the live sessions of the whole account."""
        return await self._call("listsessionofuin", {}, _sessions)

    async def list_project_sessions(self, project_id: str) -> list[SessionInfo]:
        """`listsessionofprojectid`: the live sessions of one project."""
        payload = {"VirtualmanProjectId": project_id}
        return await self._call("listsessionofprojectid", payload, _sessions)

    async def _call(
        self, api: str, payload: Mapping[str, Any], parse: Parser[T], *, gone_is_ok: bool = False
    ) -> T:
        async def attempt(ctx: CallContext) -> T:
            try:
                result = await self._post_once(ctx, payload)
            except UpstreamError as exc:
                if not (gone_is_ok and ctx.maybe_applied and exc.code in _GONE):
                    raise
                result = {}
            return parse(result, ctx)

        ctx = CallContext(service="ivh", api=api)
        return await run_call(attempt, ctx, policy=self._retry, observer=self._observer)

    async def _post_once(self, ctx: CallContext, payload: Mapping[str, Any]) -> Mapping[str, Any]:
        # A fresh ReqId per HTTP request, retries included (docs/protocol.md A.1).
        body = {"Header": {}, "Payload": {**payload, "ReqId": uuid.uuid4().hex}}
        # Signed per request, retries included, with a fresh timestamp (docs/protocol.md A.2)
        query = self._auth.query({})
        reply = await post(self._http, ctx, self._url + ctx.api, content=dumps(body), query=query)
        header = reply.body.get("Header") if reply.body is not None else None
        code = as_int(header.get("Code")) if isinstance(header, Mapping) else None
        if code and isinstance(header, Mapping):
            self._log_upstream(ctx, code, header.get("Message"))
        check_reply(reply, ctx, code, ivh_code)
        result = reply.body.get("Payload") if reply.body is not None else None
        return result if isinstance(result, Mapping) else {}

    def _log_upstream(self, ctx: CallContext, code: int, message: object) -> None:
        text = scrub(message, [self._token.get_secret_value()])
        logger.debug("IVH %s returned code %d: %s", ctx.api, code, text)

    def __repr__(self) -> str:
        return f"IvhClient(base_url={self._url!r}, appkey={self._appkey!r})"


def _model(model: type[M], **defaults: str) -> Parser[M]:
    """A parser validating the payload as `model`, `defaults` filling fields it lacks."""

    def parse(payload: Mapping[str, Any], ctx: CallContext) -> M:
        try:
            return model.model_validate({**defaults, **payload})
        except ValidationError as exc:
            raise code_error(BAD_REPLY, ctx) from exc

    return parse


def _nothing(payload: Mapping[str, Any], ctx: CallContext) -> None:
    """Calls whose payload only echoes the ReqId."""


# A listing validated in one call: ~40% less CPU than a model_validate per entry (10,000
# sessions per poll), and an entry that is no JSON object is a bad reply like any other.
_SESSION_LIST: TypeAdapter[list[SessionInfo]] = TypeAdapter(list[SessionInfo])


def _sessions(payload: Mapping[str, Any], ctx: CallContext) -> list[SessionInfo]:
    sessions = payload.get("Sessions") or []
    if not isinstance(sessions, list):
        raise code_error(BAD_REPLY, ctx)
    try:
        return _SESSION_LIST.validate_python(sessions)
    except ValidationError as exc:
        raise code_error(BAD_REPLY, ctx) from exc
