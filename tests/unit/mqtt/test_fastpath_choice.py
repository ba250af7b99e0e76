"""When the MQTT fast path is used: the setting on and paho at a verified release, said once."""

from __future__ import annotations

import logging

import pytest

from bridge.config import Settings
from bridge.mqtt.fastpath import VERIFIED, enabled, paho_version


def test_on_for_a_verified_release(caplog: pytest.LogCaptureFixture) -> None:
    release = sorted(VERIFIED)[0]
    with caplog.at_level(logging.INFO, logger="bridge.mqtt.fastpath"):
        assert enabled(True, release)
    assert [r.getMessage() for r in caplog.records] == [f"MQTT fast path on (paho-mqtt {release})"]


def test_off_for_a_release_it_was_not_verified_against(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bridge.mqtt.fastpath"):
        assert not enabled(True, "2.9.0")
    [record] = caplog.records
    assert record.levelno == logging.WARNING
    assert "paho-mqtt 2.9.0 is not a release it was verified against" in record.getMessage()


def test_off_by_the_setting_whatever_the_release(caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.INFO, logger="bridge.mqtt.fastpath"):
        assert not enabled(False, sorted(VERIFIED)[0])
        assert not enabled(False, "2.9.0")
    assert all("mqtt.fast_path = false" in r.getMessage() for r in caplog.records)


def test_the_installed_release_is_read_from_its_metadata() -> None:
    import paho.mqtt

    assert paho_version() == paho.mqtt.__version__


def test_the_setting_comes_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("TENCENT2MQTT_MQTT__FAST_PATH", raising=False)
    assert Settings(mqtt={"url": "mqtt://b:1"}).mqtt.fast_path is True
    monkeypatch.setenv("TENCENT2MQTT_MQTT__FAST_PATH", "false")
    assert Settings(mqtt={"url": "mqtt://b:1"}).mqtt.fast_path is False
