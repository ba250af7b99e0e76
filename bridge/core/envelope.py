"""Payloads the bridge publishes: the response envelope (docs/topics.md) and events
(docs/topics.md).

Features never import the MQTT library: they publish through the `Publisher` port, which
`bridge.mqtt.link.MqttLink` implements, and emit events through one `Emitter`.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Mapping
from typing import Any, Protocol

from bridge.core import jsontext
from bridge.core.topics import Topics
from bridge.errors import BridgeError


def now_iso() -> str:
    """The current time as ISO 8601 UTC with milliseconds (`2026-12-02T06:52:01.123Z`)."""
    now = time.time()
    second = int(now)
    micro = round((now - second) * 1e6)  # as datetime.fromtimestamp rounds, then truncated
    if micro == 1_000_000:
        second, micro = second + 1, 0
    return f"{_second(second)}.{micro // 1000:03d}Z"


@functools.lru_cache(maxsize=4)  # several stamps per request, all in the same second or two
def _second(epoch: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(epoch))


def dumps(payload: Mapping[str, Any]) -> bytes:
    """Serialise a payload as compact UTF-8 JSON (never `NaN`: see `jsontext.dumps`)."""
    return jsontext.dumps(payload, separators=(",", ":"), default=str).encode()


def ok_response(
    *, transaction: Any, session_id: str | None, data: Any, elapsed_ms: float
) -> dict[str, Any]:
    """A success envelope."""
    return {
        "status": "ok",
        "transaction": transaction,
        "session_id": session_id,
        "data": data,
        "elapsed_ms": round(elapsed_ms, 3),
    }


def error_response(
    *, transaction: Any, session_id: str | None, error: BridgeError
) -> dict[str, Any]:
    """An error envelope."""
    return {
        "status": "error",
        "transaction": transaction,
        "session_id": session_id,
        "error": error.to_dict(),
    }


class Publisher(Protocol):
    """The output port: non-blocking publishes, queued while the broker is away."""

    def publish(self, topic: str, payload: bytes, *, correlation_data: bytes | None = None) -> None:
        """Queue a non-retained message."""

    def set_retained(self, topic: str, payload: bytes) -> None:
        """Publish a retained message and remember it, to re-assert after every reconnect."""

    def clear_retained(self, topic: str) -> None:
        """Clear a retained topic (empty retained message) and forget it."""


class Emitter:
    """Publishes typed events with a per-session `seq` (docs/topics.md)."""

    def __init__(self, publisher: Publisher, topics: Topics) -> None:
        self._publisher = publisher
        self._topics = topics
        self._seq: dict[tuple[str, str], int] = {}

    def emit(
        self,
        service: str,
        session_id: str,
        event_type: str,
        data: Mapping[str, Any],
        *,
        before: Any = None,
        after: Any = None,
    ) -> dict[str, Any]:
        """Publish one event on `<base>/<service>/<sid>/event`; returns it."""
        key = (service, session_id)
        seq = self._seq.get(key, 0) + 1
        self._seq[key] = seq
        event: dict[str, Any] = {
            "type": event_type,
            "service": service,
            "session_id": session_id,
            "seq": seq,
            "ts": now_iso(),
            "data": dict(data),
        }
        if before is not None or after is not None:
            event["before"], event["after"] = before, after
        self._publisher.publish(self._topics.event(service, session_id), dumps(event))
        return event

    def bridge_event(self, event_type: str, data: Mapping[str, Any]) -> None:
        """Publish a bridge-level event on `<base>/bridge/event`."""
        event = {"type": event_type, "ts": now_iso(), "data": dict(data)}
        self._publisher.publish(self._topics.bridge_event, dumps(event))

    def forget(self, service: str, session_id: str) -> None:
        """Drop the seq counter of a session that is gone for good."""
        self._seq.pop((service, session_id), None)
