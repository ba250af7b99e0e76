"""A hook for metrics: one `CallRecord` per logical API call, retries included."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Literal, Protocol

logger = logging.getLogger(__name__)

Service = Literal["ivh", "desk"]


@dataclass(frozen=True, slots=True, kw_only=True)
class CallRecord:
    """The outcome of one logical call: `outcome` is "ok" or the SPEC error code."""

    service: Service
    api: str
    elapsed: float
    outcome: str
    attempts: int
    retries: int


class CallObserver(Protocol):
    """Receives a `CallRecord` after every logical call; must not block."""

    def __call__(self, record: CallRecord, /) -> None:
        """Record one call."""


def notify(observer: CallObserver | None, record: CallRecord) -> None:
    """Hand `record` to `observer`; a failing observer is logged and never fails the call."""
    if observer is None:
        return
    try:
        observer(record)
    except Exception:
        logger.exception("call observer failed for %s %s", record.service, record.api)
