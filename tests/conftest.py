"""Fixtures: a private mosquitto per test session (and per test, where tests kill it)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.bridge import unique_base
from tests.support.broker import Broker


@pytest.fixture(scope="session")
def broker(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Broker]:
    """A mosquitto shared by the tests that do not hurt it."""
    b = Broker(tmp_path_factory.mktemp("mosquitto"))
    b.start()
    yield b
    b.kill()


@pytest.fixture
def own_broker(tmp_path: Path) -> Iterator[Broker]:
    """A mosquitto for one test, which may kill and restart it."""
    b = Broker(tmp_path)
    b.start()
    yield b
    b.kill()


@pytest.fixture
def base() -> str:
    """A base topic unique to this test."""
    return unique_base()
