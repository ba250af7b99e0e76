"""Why a connection failed, as the bridge's own warning says it: paho's last error line kept per
session, and the hint for a TLS broker that closes on a bridge without a client certificate."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import trustme

from bridge.config import MqttConfig
from bridge.mqtt.link import tls_close_hint
from bridge.mqtt.session import PAHO_LOG, SessionLog

EOF_LINE = "failed to receive on socket: EOF occurred in violation of protocol (_ssl.c:2427)"


def test_a_session_log_keeps_the_last_error_and_passes_lines_on_as_mqtt(
    caplog: pytest.LogCaptureFixture,
) -> None:
    log = SessionLog()
    with caplog.at_level(logging.DEBUG, logger=PAHO_LOG.name):
        log.debug("Sending CONNECT")
        assert log.last_error is None
        log.error("failed to receive on socket: %s", "boom")
        log.info("later, not an error")
    assert log.last_error == "failed to receive on socket: boom"
    assert [(r.name, r.getMessage()) for r in caplog.records][-2:] == [
        ("mqtt", "failed to receive on socket: boom"),
        ("mqtt", "later, not an error"),
    ]


def test_the_hint_is_for_tls_without_a_client_certificate_closed_early(tmp_path: Path) -> None:
    plain = MqttConfig(url="mqtt://broker:1883")
    tls = MqttConfig(url="mqtts://broker:8883")
    hint = tls_close_hint(tls, f"disconnected ({EOF_LINE}): Unspecified error")
    assert "mqtt.tls_cert_file" in hint and "CERTIFICATE_REQUIRED" in hint
    assert tls_close_hint(tls, "disconnected ([Errno 104] Connection reset by peer)") == hint
    assert tls_close_hint(plain, EOF_LINE) == ""  # not TLS: no certificate to ask for
    assert tls_close_hint(tls, "connection refused: Not authorized") == ""  # said already
    ca = trustme.CA()
    cert = ca.issue_cert("bridge")
    cert.private_key_and_cert_chain_pem.write_to_path(str(tmp_path / "bridge.pem"))
    cert.private_key_pem.write_to_path(str(tmp_path / "bridge.key"))
    with_cert = MqttConfig(
        url="mqtts://broker:8883",
        tls_cert_file=tmp_path / "bridge.pem",
        tls_key_file=tmp_path / "bridge.key",
    )
    assert tls_close_hint(with_cert, EOF_LINE) == ""  # it has one: some other reason


def test_an_error_is_kept_where_mqtt_would_not_show_it(caplog: pytest.LogCaptureFixture) -> None:
    log = SessionLog()
    with caplog.at_level(logging.CRITICAL, logger=PAHO_LOG.name):
        log.error("failed to receive on socket: %s", "reset")
        log.warning("not shown")
    assert log.last_error == "failed to receive on socket: reset"
    assert not [r for r in caplog.records if r.name == "mqtt"]
