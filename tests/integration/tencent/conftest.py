"""What the HTTP client tests share: both request paths."""

from __future__ import annotations

import pytest


@pytest.fixture(params=[True, False], ids=["fast-path", "aiohttp"])
def fast_path(request: pytest.FixtureRequest) -> bool:
    """Each test here runs on both of `HttpSession`'s request paths, the fast path
    (bridge/tencent/fastpost.py) and aiohttp's own `ClientSession.post`: they must behave alike."""
    return bool(request.param)
