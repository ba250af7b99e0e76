"""The MQTT link at paho's level: how much it keeps in flight, how large a packet is, the CONNECT
properties, and TLS. Public paho API only (the fast path is `bridge.mqtt.fastpath`)."""

from __future__ import annotations

import ssl

from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.config import MqttConfig
from bridge.config.tlsfiles import client_context

INFLIGHT = 256  # publishes awaiting their acknowledgement at most
# MQTT 3.1.1 has no Receive Maximum, but brokers bound the QoS 2 messages they take in flight
# (mosquitto 20, HiveMQ 10) and refuse the rest: stay under the smallest common default.
QOS2_WINDOW_V311 = 10
RETAIN_NOT_SUPPORTED = 0x9A  # MQTT 5 reason code: CONNACK refusing a retained will


def publish_size(
    topic: str, payload: bytes, *, qos: int, v5: bool, correlation: bytes | None = None
) -> int:
    """Bytes of the PUBLISH packet for this message (MQTT 3.3), as a broker counts them."""
    properties = 3 + len(correlation) if correlation is not None else 0  # id, length, data
    body = 2 + len(topic.encode("utf-8")) + (2 if qos else 0) + len(payload)
    if v5:
        body += _varint_size(properties) + properties
    return 1 + _varint_size(body) + body


def _varint_size(value: int) -> int:
    return 1 if value < 128 else 2 if value < 16_384 else 3 if value < 2_097_152 else 4


def window_for(protocol: int, qos: int, connack: Properties | None) -> int:
    """How many publishes may await their acknowledgement: never more than the broker's
    Receive Maximum (MQTT 5, 3.3.4: a broker may disconnect a client that sends more; 65,535
    when it sends none), and for QoS 2 over 3.1.1 a bound brokers commonly keep."""
    if protocol == 5:
        peer = getattr(connack, "ReceiveMaximum", None) if connack is not None else None
        return max(1, min(INFLIGHT, peer if isinstance(peer, int) else 65_535))
    return QOS2_WINDOW_V311 if qos == 2 else INFLIGHT


def connect_properties(cfg: MqttConfig) -> Properties | None:
    """The CONNECT properties (MQTT 5): a Session Expiry Interval when one is set."""
    if not cfg.session_expiry:
        return None
    props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
    props.SessionExpiryInterval = cfg.session_expiry
    return props


def tls_context(cfg: MqttConfig) -> ssl.SSLContext:
    """TLS for `mqtts://`: CA and client certificate; `tls_insecure` skips verification. The
    config loaded the same files with the same function (`bridge.tlsfiles`) when it was read."""
    ctx = client_context(
        ca_file=cfg.tls_ca_file,
        cert_file=cfg.tls_cert_file,
        key_file=cfg.tls_key_file,
        insecure=cfg.tls_insecure,
    )
    ctx.sslsocket_class = _ClosingSSLSocket
    return ctx


class _ClosingSSLSocket(ssl.SSLSocket):
    """Closes itself when the handshake fails: paho does not, so every refused attempt (a
    server certificate that does not verify) would leak a socket until garbage collection."""

    def do_handshake(self, block: bool = False) -> None:
        """The TLS handshake; the socket is closed if it fails."""
        try:
            super().do_handshake(block)
        except BaseException:
            self.close()
            raise
