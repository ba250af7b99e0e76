"""Fixtures: a private mosquitto per test session (and per test, where tests kill it), and the
secrets scan that runs around every test (docs/reliability.md)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import bridge.tencent.usersig as usersig_module
from tests.support import figures, leaks
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


@pytest.fixture(autouse=True)
def no_secret_leaks(monkeypatch: pytest.MonkeyPatch) -> Iterator[leaks.LeakWatch]:
    """Every log record, probe message and child log of the test, scanned for secrets."""
    watch, handler = leaks.begin()
    original = usersig_module.gen_usersig

    def recording(**kwargs: Any) -> str:
        sig = original(**kwargs)
        watch.secret(sig, kwargs.get("secret_key"))
        return sig

    monkeypatch.setattr(usersig_module, "gen_usersig", recording)
    root = logging.getLogger()
    level = root.level
    root.setLevel(min(level, logging.INFO))
    try:
        yield watch
    finally:
        root.setLevel(level)
        hits = leaks.end(handler)
        figures.add("leak_scans")
        figures.add("leaks_found", len(hits))
    assert not hits, "secrets leaked:\n" + "\n".join(hits[:20])
