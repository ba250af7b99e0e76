"""Fixtures: a fast emulator on a free loopback port and an HTTP client pointed at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import httpx
import pytest

from bridge.emulator import Emulator, EmulatorConfig

FAST = {"prepare_delay": 0.05, "speak_delay": 0.01}
EmulatorFactory = Callable[..., AbstractAsyncContextManager[Emulator]]


@pytest.fixture
def make_emulator() -> EmulatorFactory:
    """Build an emulator with fast timings plus any config overrides."""

    def factory(**overrides: Any) -> AbstractAsyncContextManager[Emulator]:
        return Emulator(EmulatorConfig.generate(**{**FAST, **overrides}))

    return factory


@pytest.fixture
async def emu(make_emulator: EmulatorFactory) -> AsyncIterator[Emulator]:
    """A running emulator with fast timings."""
    async with make_emulator() as emulator:
        yield emulator


@pytest.fixture
async def client(emu: Emulator) -> AsyncIterator[httpx.AsyncClient]:
    """An HTTP client for the emulator."""
    async with httpx.AsyncClient(base_url=emu.base_url, timeout=5) as http:
        yield http
