"""paho's hot paths, lean. Reading: packets framed from one read per wake-up, and the two kinds
a bridge receives by the thousand (PUBLISH without properties, a plain PUBACK) decoded without
paho's per-packet objects. Writing: a QoS 1 PUBLISH built in one go. Everything else still goes
through paho's own code, unchanged.

Profiled at 1,000 requests/s, paho's reading was about two fifths of the bridge's CPU: three
`recv` calls per packet (command byte, each length byte, body), and per PUBLISH or PUBACK a
`Properties` (which builds two dicts of 27 entries each time), a `ReasonCode`, and for each
message a `threading.Condition`. `bridge.mqtt.link.MqttLink` uses both sides; the bench's load
generator reads the same way.
"""

from __future__ import annotations

import struct
import time
from typing import Any

import aiomqtt
from paho.mqtt.client import MQTTMessage, MQTTMessageInfo
from paho.mqtt.enums import LogLevel, MessageState, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

READ_SIZE = 65_536
_OK = MQTTErrorCode.MQTT_ERR_SUCCESS
_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST
_PROTOCOL = MQTTErrorCode.MQTT_ERR_PROTOCOL
# What paho hands on_publish for a PUBACK of success, or of "no matching subscribers" (0x10:
# delivered, nobody listens, as for most retained state topics), without properties: the same
# every time.
_ACK_REASONS = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0x00, 0x10)}
_ACK_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def lean_reads(client: aiomqtt.Client) -> None:
    """Once `client` is connected: its paho client reads and decodes through `LeanReader`."""
    LeanReader(client._client)


class Received:
    """An incoming PUBLISH with the attributes of paho's `MQTTMessage` (without its
    `MQTTMessageInfo`, whose lock and condition only a sender waits on)."""

    __slots__ = ("dup", "mid", "payload", "properties", "qos", "retain", "timestamp", "topic")

    def __init__(self, topic: str, payload: bytes, qos: int, mid: int, header: int) -> None:
        self.topic = topic
        self.payload = payload
        self.qos = qos
        self.mid = mid
        self.retain = bool(header & 0x01)
        self.dup = bool(header & 0x08)
        self.properties: Properties | None = None
        self.timestamp = time.monotonic()


class LeanReader:
    """Installs itself on a paho client: `loop_read`, `_handle_publish`, `_handle_pubackcomp`.

    `loop_read` (what aiomqtt's reader callback calls) reads up to 64 KiB once, hands each whole
    packet to paho's `_packet_handle` through `_in_packet` as paho's own reader would, and keeps
    a partial packet for the next wake-up. A large packet's bytes are gathered until its length
    is there, then framed once: linear in its size, however many reads it takes. If paho's own
    reader is in the middle of a packet (it read the first ones, before this was installed),
    paho finishes it.
    """

    def __init__(self, paho: Any) -> None:
        self._paho = paho
        self._v5 = paho._protocol == MQTTProtocolVersion.MQTTv5
        self._paho_read = paho.loop_read
        self._paho_publish = paho._handle_publish
        self._paho_ack = paho._handle_pubackcomp
        self._sock: Any = None
        self._rest = bytearray()  # the start of a packet not yet whole
        self._need = 0  # the bytes `_rest` must hold before that packet can be whole
        paho.loop_read = self.loop_read
        paho._handle_publish = self.handle_publish
        paho._handle_pubackcomp = self.handle_ack

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """paho's `loop_read`: read what is there, handle every whole packet in it."""
        paho = self._paho
        sock = paho._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if paho._in_packet["command"]:  # paho's own reader holds part of a packet
            return self._paho_read(max_packets)  # type: ignore[no-any-return]
        if sock is not self._sock:  # a new connection: nothing of the old one carries over
            self._sock, self._rest, self._need = sock, bytearray(), 0
        try:
            data = paho._sock_recv(READ_SIZE)
        except BlockingIOError:
            return _OK
        except OSError as err:
            paho._easy_log(LogLevel.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
            return paho._loop_rc_handle(_LOST)  # type: ignore[no-any-return]
        if not data:
            return paho._loop_rc_handle(_LOST)  # type: ignore[no-any-return]
        with paho._msgtime_mutex:
            paho._last_bytes_received = time.monotonic()
        if self._rest:
            self._rest += data
            if len(self._rest) < self._need:
                return _OK
            buf = bytes(self._rest)
        else:
            buf = data
        rc, used = self._packets(buf)
        self._rest = bytearray(buf[used:])
        return paho._loop_rc_handle(rc) if rc else _OK

    def _packets(self, buf: bytes) -> tuple[MQTTErrorCode, int]:
        """Handle each whole packet in `buf`: the first error, and the bytes used."""
        end, pos, sock = len(buf), 0, self._sock
        self._need = 0
        while pos + 2 <= end:
            length, shift, at = 0, 0, pos + 1
            while True:  # the Remaining Length (MQTT 2.2.3): at most four bytes
                if at >= end:
                    return _OK, pos
                byte = buf[at]
                at += 1
                length |= (byte & 0x7F) << shift
                if not byte & 0x80:
                    break
                shift += 7
                if shift == 28:
                    return _PROTOCOL, pos
            if at + length > end:
                self._need = at + length - pos
                return _OK, pos
            rc = self._handle(buf[pos], buf[at : at + length])
            pos = at + length
            if rc or self._paho._sock is not sock:  # an error, or a handler closed it
                return rc, pos
        return _OK, pos

    def _handle(self, command: int, body: bytes) -> MQTTErrorCode:
        paho = self._paho
        packet = paho._in_packet
        packet["command"] = command
        packet["remaining_length"] = len(body)
        packet["packet"] = body
        try:
            return paho._packet_handle()  # type: ignore[no-any-return]
        except MalformedPacket as exc:
            paho._easy_log(LogLevel.MQTT_LOG_ERR, "Received malformed packet: %s", exc)
            return _PROTOCOL
        finally:
            packet["command"] = 0
            packet["remaining_length"] = 0
            packet["packet"] = b""

    def handle_publish(self) -> MQTTErrorCode:
        """paho's `_handle_publish`, for QoS 0 and 1 without properties; else paho's own."""
        paho = self._paho
        command, body = paho._in_packet["command"], paho._in_packet["packet"]
        qos = (command >> 1) & 3
        size = len(body)
        cut = 2 + ((body[0] << 8) | body[1]) if size >= 2 else 0
        at = cut + (2 if qos else 0)
        lean = cut > 2 and qos < 2 and at + self._v5 <= size and not (self._v5 and body[at])
        topic = _text(body[2:cut]) if lean else None
        if topic is None:
            return self._paho_publish()  # type: ignore[no-any-return]
        mid = (body[cut] << 8) | body[cut + 1] if qos else 0
        paho._handle_on_message(Received(topic, body[at + self._v5 :], qos, mid, command))
        if qos == 0 or paho._manual_ack:
            return _OK
        return paho._send_puback(mid)  # type: ignore[no-any-return]

    def handle_ack(self, kind: str) -> MQTTErrorCode:
        """paho's `_handle_pubackcomp`, for a PUBACK of success or "no matching subscribers"
        without properties; else paho's."""
        body = self._paho._in_packet["packet"]
        reason = _plain_ack(body, v5=self._v5) if kind == "PUBACK" else None
        if reason is None:
            return self._paho_ack(kind)  # type: ignore[no-any-return]
        paho = self._paho
        mid = (body[0] << 8) | body[1]
        if mid not in paho._out_messages:
            return _OK
        return paho._do_on_publish(mid, reason, _ACK_NO_PROPERTIES)  # type: ignore[no-any-return]


def _plain_ack(body: bytes, *, v5: bool) -> ReasonCode | None:
    """The reason of a PUBACK without properties, if a common one (MQTT 3.4.2: reason and
    properties may be left out; 3.1.1 has neither)."""
    size = len(body)
    if size == 2:
        return _ACK_REASONS[0]
    if v5 and (size == 3 or (size == 4 and body[3] == 0)):
        return _ACK_REASONS.get(body[2])
    return None


def _text(raw: bytes) -> str | None:
    try:
        return raw.decode()
    except UnicodeDecodeError:  # paho's own handler keeps its way of reporting it
        return None


class LeanWriter:
    """Publishes through a paho client: QoS 1 built here, anything else by `paho.publish`."""

    def __init__(self, paho: Any) -> None:
        self._paho = paho
        self._v5 = paho._protocol == MQTTProtocolVersion.MQTTv5

    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, correlation: bytes | None
    ) -> tuple[int, int, bool]:
        """Queue one PUBLISH: (paho's return code, message id, already published). Raises
        `ValueError` for what paho refuses (a wildcard, a topic or payload too long). The
        correlation data goes out over MQTT 5 only (3.1.1 has no properties)."""
        paho = self._paho
        if qos != 1 or not topic or paho._sock is None:
            info = paho.publish(topic, payload, qos, retain, self._properties(correlation))
            return info.rc, info.mid, info.is_published()
        name = topic.encode()
        paho._raise_for_invalid_topic(name)
        if len(payload) > 268_435_455:
            raise ValueError("Payload too large.")
        mid = paho._mid_generate()
        if mid in paho._out_messages:  # 65,535 ids all awaiting PUBACK: as paho answers
            return MQTTErrorCode.MQTT_ERR_QUEUE_SIZE, mid, False
        paho._out_messages[mid] = _awaiting_puback(mid, name, payload, retain)
        paho._inflight_messages += 1
        props = _correlation(correlation) if self._v5 else b""
        head = struct.pack("!H", len(name)) + name + struct.pack("!H", mid) + props
        packet = bytes([0x32 | retain]) + _varint(len(head) + len(payload)) + head + payload
        paho._packet_queue(0x30, packet, mid, 1)
        return _OK, mid, False

    def _properties(self, correlation: bytes | None) -> Properties | None:
        if correlation is None or not self._v5:
            return None
        props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
        props.CorrelationData = correlation
        return props


# paho marks a message's info published on its PUBACK; a QoS 1 message built here has no
# caller waiting on that info (the link tracks ids), so all share one instead of a Condition each.
_NO_WAITER = MQTTMessageInfo(0)


def _awaiting_puback(mid: int, topic: bytes, payload: bytes, retain: bool) -> MQTTMessage:
    """The entry paho keeps in `_out_messages` for a QoS 1 message, as `publish` makes it but
    without its properties: paho reads those only to send the message again when the same client
    reconnects, and the link makes a new client for every connection (re-sending from its own
    outbox)."""
    msg: MQTTMessage = MQTTMessage.__new__(MQTTMessage)
    msg.mid, msg._topic, msg.payload, msg.qos, msg.retain = mid, topic, payload, 1, retain
    msg.dup, msg.properties, msg.info = False, None, _NO_WAITER
    msg.state, msg.timestamp = MessageState.MQTT_MS_WAIT_FOR_PUBACK, time.monotonic()
    return msg


def _correlation(data: bytes | None) -> bytes:
    """The PUBLISH properties (MQTT 3.3.2.3): none, or Correlation Data (9) alone."""
    if data is None:
        return b"\x00"
    prop = b"\x09" + struct.pack("!H", len(data)) + data
    return _varint(len(prop)) + prop


def _varint(n: int) -> bytes:
    """A Variable Byte Integer (MQTT 1.5.5)."""
    out = bytearray()
    while True:
        n, byte = n >> 7, n & 0x7F
        out.append(byte | 0x80 if n else byte)
        if not n:
            return bytes(out)
