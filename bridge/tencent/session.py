"""The HTTP sessions and retry policy the Tencent clients are built with."""

from __future__ import annotations

import httpx

from bridge.config import RetryConfig
from bridge.tencent import lean
from bridge.tencent.retry import RetryPolicy


def retry_policy(cfg: RetryConfig) -> RetryPolicy:
    """The clients' retry policy from `[retry]`."""
    return RetryPolicy(
        attempts=cfg.attempts,
        initial_delay=cfg.initial_delay,
        max_delay=cfg.max_delay,
        deadline=cfg.deadline,
    )


def http_client(timeout: float) -> httpx.AsyncClient:
    """An HTTP client for one Tencent API, kept alive, with the service's timeout."""
    return lean.client(timeout)
