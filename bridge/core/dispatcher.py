"""From an inbound MQTT message to an action run and one reply (docs/topics.md,
docs/reliability.md).

Flow: topic -> route -> checks (retain, size, UTF-8, JSON, session id, expiry, duplicate) ->
payload model -> handler task -> `reply()`. Every check that fails answers with the error
envelope and calls nothing. Checks run synchronously in arrival order, so handler tasks start
in arrival order (asyncio starts tasks FIFO): per-session streams rely on that.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from bridge.config import BridgeConfig
from bridge.core import jsontext
from bridge.core.actions import BoundAction, Payload, Registry
from bridge.core.dedup import Deduplicator
from bridge.core.envelope import Emitter, Publisher, dumps, error_response, ok_response
from bridge.core.inbound import Inbound
from bridge.core.ownership import request_key
from bridge.core.requests import RequestContext, decode_payload, expired, payload_limit, validate
from bridge.core.topics import BadRoute, Route, Topics
from bridge.errors import BridgeError, RequestError

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class _Job:
    action: BoundAction
    payload: Payload
    ctx: RequestContext


class Dispatcher:
    """Runs actions for inbound messages; never raises, whatever the input."""

    def __init__(
        self,
        *,
        registry: Registry,
        known_actions: set[str],
        publisher: Publisher,
        emitter: Emitter,
        topics: Topics,
        config: BridgeConfig,
        disabled: Mapping[str, str] | None = None,
        owns: Callable[[str], bool] | None = None,
        unowned: Callable[[str], bool] | None = None,
    ) -> None:
        self._registry = registry
        # In a cluster every instance receives every request and only its key's owner acts
        # (docs/scale-out.md); None: this instance answers everything.
        self._owns = owns
        self._unowned = unowned  # whether to answer a request nobody owns yet ("retry")
        self._known = known_actions
        self._disabled = dict(disabled or {})  # service -> why it does not run
        self._publisher = publisher
        self._emitter = emitter
        self._topics = topics
        self._config = config
        self._room = asyncio.Event()
        self._tasks: set[asyncio.Task[None]] = set()
        self._fenced: set[asyncio.Task[None]] = set()  # cancelled by `fence`, not a shutdown
        self._dedup = Deduplicator(config.dedup_window)
        self._closing = False
        self.outcomes: Counter[tuple[str, str]] = Counter()

    @property
    def inflight(self) -> int:
        """Actions running now."""
        return len(self._tasks)

    def offer(self, msg: Inbound) -> bool:
        """Handle one inbound message now; False while `max_inflight` actions run (the MQTT
        link then awaits `room()` and offers it again: backpressure, in arrival order)."""
        if len(self._tasks) >= self._config.max_inflight:
            return False
        try:
            job = self._prepare(msg)
            if job is not None:
                task = asyncio.create_task(self._run(job), name=f"action:{job.ctx.action}")
                self._tasks.add(task)
                task.add_done_callback(self._done)
        except Exception:  # the bridge never crashes on input
            log.exception("unexpected error handling a message on %s", msg.topic)
        return True

    async def room(self) -> None:
        """Return once an action slot is free."""
        while len(self._tasks) >= self._config.max_inflight:
            self._room.clear()
            await self._room.wait()

    def refuse(self, msg: Inbound) -> None:
        """Answer a command with `rate_limited` (retryable) without running it: the MQTT link
        holds `10 x max_inflight` commands waiting for a slot already. Checked as any command
        first, so a bad one still gets its own error."""
        busy = f"{self.inflight} actions run and more wait: the bridge is busy"
        try:
            self._prepare(msg, BridgeError(busy, code="rate_limited", retryable=True))
        except Exception:  # the bridge never crashes on input
            log.exception("unexpected error refusing a message on %s", msg.topic)

    def fence(self) -> None:
        """The link was lost (or the process frozen) in a cluster: stop every action now, so
        none calls Tencent again (a retry, its next step) for a key another instance may own by
        now (docs/scale-out.md "Failure and fencing"). Each is answered `channel_unavailable`
        (retryable) once the link is back."""
        for task in self._tasks:
            if not task.done():
                self._fenced.add(task)
                task.cancel()

    def _done(self, task: asyncio.Task[None]) -> None:
        self._fenced.discard(task)
        self._tasks.discard(task)
        self._room.set()

    def _prepare(self, msg: Inbound, busy: BridgeError | None = None) -> _Job | None:
        route = self._topics.parse(msg.topic)
        if route is None:
            return None  # one of the bridge's own output topics (another instance's)
        if self._owns is not None and not (msg.retain and not msg.payload):
            limit = payload_limit(route.action or "", self._config)  # audio: its session too
            key = request_key(route, msg.payload, max_payload=limit)
            if not self._owns(key):
                if busy is not None or self._unowned is None or not self._unowned(key):
                    return None  # its owner answers it
                busy = BridgeError(
                    "no bridge instance is active yet (the cluster is starting); retry",
                    code="rate_limited",
                    retryable=True,
                )
        if isinstance(route, BadRoute):
            self._bad_route(msg, route)
            return None
        if msg.retain and not msg.payload:
            return None  # someone clearing a retained command: a deletion, not a command
        ctx = RequestContext.start(route, msg, self._topics)
        try:
            return self._check(route, msg, ctx, busy)
        except Exception as exc:  # a bug in the checks still gets an answer, never silence
            err = exc if isinstance(exc, BridgeError) else _unexpected(msg, exc)
            if ctx.transaction is None and len(msg.payload) <= self._config.max_payload:
                ctx.bind(_json_object_or_empty(msg.payload))
            self.reply_error(ctx, err)
            return None

    def _check(
        self, route: Route, msg: Inbound, ctx: RequestContext, busy: BridgeError | None
    ) -> _Job | None:
        if msg.retain:
            raise RequestError("command messages must not be retained", code="retained_command")
        limit = payload_limit(route.action, self._config)
        if len(msg.payload) > limit:
            raise RequestError(
                f"payload is {len(msg.payload)} bytes, the limit is {limit}",
                code="payload_too_large",
            )
        data = decode_payload(route, msg.payload)
        ctx.bind(data)
        if expired(msg, data):
            raise RequestError("the request expired before it could run", code="expired")
        action = self._lookup(route.action)
        if busy is not None:  # a valid command, refused before it is remembered or run
            raise busy
        if self._dedup.seen(ctx, data):
            self._dedup.follow(ctx, self._publish_reply)
            return None
        return _Job(action=action, payload=validate(action.spec.model, data, route), ctx=ctx)

    def _lookup(self, key: str) -> BoundAction:
        action = self._registry.get(key)
        if action is not None:
            return action
        if key in self._known:
            service = key.split("/")[0]
            why = self._disabled.get(service, "it is not enabled")
            raise RequestError(f"the {service} service is disabled: {why}", code="service_disabled")
        raise RequestError(f"unknown action {key!r}", code="unknown_action")

    async def _run(self, job: _Job) -> None:
        ctx = job.ctx
        if self._closing:
            self.reply_error(ctx, _shutting_down("arrived as the bridge stops"))
            return
        try:
            result = await job.action(job.payload)
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task in self._fenced and not self._closing:
                task.uncancel()
                lost = "the bridge lost its MQTT connection while this ran; retry"
                self.reply_error(ctx, BridgeError(lost, code="channel_unavailable", retryable=True))
                return
            if self._closing:  # still running when the shutdown grace ran out: say so
                self.reply_error(ctx, _shutting_down("was cancelled as the bridge stopped"))
            raise
        except BridgeError as err:
            self.reply_error(ctx, err)
        except Exception:
            log.exception("action %s failed (topic %s)", ctx.action, ctx.topic)
            self.reply_error(ctx, BridgeError("internal error; see the bridge log"))
        else:
            self._reply_ok(ctx, job.action, result)

    def _reply_ok(self, ctx: RequestContext, action: BoundAction, result: Any) -> None:
        self._count(ctx.action, "ok")
        if action.spec.reply == "when_asked" and result is None and not ctx.asked:
            self._dedup.finish(ctx, None)
            return
        data = result.model_dump(mode="json") if isinstance(result, BaseModel) else result
        created = data.get("session_id") if isinstance(data, dict) else None
        envelope = ok_response(
            transaction=ctx.transaction,
            session_id=ctx.session_id or created,
            data={} if data is None else data,
            elapsed_ms=(time.monotonic() - ctx.started) * 1000,
        )
        self._publish_reply(ctx, envelope)

    def reply_error(self, ctx: RequestContext, err: BridgeError) -> None:
        """Answer a request with the error envelope."""
        self._count(ctx.action, err.code)
        envelope = error_response(transaction=ctx.transaction, session_id=ctx.session_id, error=err)
        self._publish_reply(ctx, envelope)

    def _count(self, action: str, outcome: str) -> None:
        """Count an outcome; an action name the bridge does not know counts as `unknown`, so
        names made up by clients cannot grow the counter (or /metrics) without bound."""
        self.outcomes[(action if action in self._known else "unknown", outcome)] += 1

    def _publish_reply(self, ctx: RequestContext, envelope: dict[str, Any] | None) -> None:
        body = None if envelope is None else dumps(envelope)
        self._dedup.finish(ctx, body)
        if body is not None:
            self._publisher.publish(ctx.reply_topic, body, correlation_data=ctx.correlation_data)

    def _bad_route(self, msg: Inbound, route: BadRoute) -> None:
        if route.action is None:
            self._count("?", "bad_topic")
            self._emitter.bridge_event(
                "request_error",
                {"code": "unknown_action", "message": route.reason, "topic": msg.topic},
            )
            return
        ctx = RequestContext.start(Route(action=route.action), msg, self._topics)
        ctx.bind(_json_object_or_empty(msg.payload))
        self.reply_error(ctx, RequestError(route.reason, code="invalid_session_id"))

    async def close(self, grace: float) -> None:
        """Stop taking commands and let running ones finish (bounded), then cancel the rest."""
        self._closing = True
        if self._tasks:
            _, pending = await asyncio.wait(set(self._tasks), timeout=grace)
            for task in pending:
                task.cancel()
            if pending:
                log.warning("shutdown: %d actions cancelled after %.1fs", len(pending), grace)
                await asyncio.wait(pending)


def _shutting_down(what: str) -> BridgeError:
    """Retryable: the same command succeeds on the restarted bridge, or another instance."""
    return BridgeError(f"the request {what}; send it again", code="shutting_down", retryable=True)


def _unexpected(msg: Inbound, exc: Exception) -> BridgeError:
    log.error("unexpected error checking a message on %s", msg.topic, exc_info=exc)
    return BridgeError("internal error; see the bridge log")


def _json_object_or_empty(raw: bytes) -> dict[str, Any]:
    try:
        value = jsontext.loads(raw, max_depth=jsontext.MAX_DEPTH)
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}
