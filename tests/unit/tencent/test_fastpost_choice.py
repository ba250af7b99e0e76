"""When the HTTP fast path is used: the setting on and aiohttp at a verified release, said once."""

from __future__ import annotations

import importlib.metadata
import logging

import pytest

from bridge.config import Settings
from bridge.tencent.fastpost import VERIFIED, aiohttp_version, enabled

LOGGER = "bridge.tencent.fastpost"


def test_on_for_a_verified_release(caplog: pytest.LogCaptureFixture) -> None:
    release = sorted(VERIFIED)[0]
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert enabled(True, release)
    assert [r.getMessage() for r in caplog.records] == [f"HTTP fast path on (aiohttp {release})"]


def test_off_for_a_release_it_was_not_verified_against(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not enabled(True, "3.99.0")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "aiohttp 3.99.0 is not a release it was verified against" in record.getMessage()


def test_off_by_the_setting_whatever_the_release(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger=LOGGER):
        assert not enabled(False, sorted(VERIFIED)[0])
        assert not enabled(False, "3.99.0")
    assert all("bridge.http_fast_path = false" in r.getMessage() for r in caplog.records)


def test_the_installed_release_is_the_one_aiohttp_reports() -> None:
    assert aiohttp_version() == importlib.metadata.version("aiohttp")


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENCENT2MQTT_BRIDGE__HTTP_FAST_PATH", raising=False)
    assert Settings().bridge.http_fast_path is True
    monkeypatch.setenv("TENCENT2MQTT_BRIDGE__HTTP_FAST_PATH", "false")
    assert Settings().bridge.http_fast_path is False
