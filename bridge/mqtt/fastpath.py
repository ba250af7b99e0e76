"""The MQTT fast path: paho's hot read and write paths, done here on paho's private state.

Everything in this module reads or writes names paho does not publish, so it is used only with
the paho versions it was verified against (`VERIFIED`, checked once by `enabled`) and only when
the `mqtt.fast_path` setting is on; otherwise `bridge.mqtt.session.PahoSession` drives paho
through its public external-loop API alone, with the same behaviour (docs/performance.md, "MQTT
fast path", has what each part saves and how that was measured). `PahoFastPath` does four things
for one paho client:

- reading: one `recv` per wake-up framed into packets, and the two kinds a bridge receives by
  the thousand (PUBLISH without properties, a plain PUBACK) decoded without paho's per-packet
  objects (`Properties`, `ReasonCode`, a `threading.Condition` per message); every other packet
  goes to paho's own handler, unchanged;
- writing: a QoS 1 PUBLISH built in one go, as `Client.publish` would queue it;
- joining: the packets queued in one pass of the event loop go out in one `send`;
- no per-topic callback lookup on receipt (paho's builds a reference cycle per message).

No upstream API would remove these touches: paho has no hook for a packet reader or for
joining writes (its external-loop API hands over the socket, not the framing).
"""

from __future__ import annotations

import importlib.metadata
import logging
import struct
import time
from collections import deque
from collections.abc import Iterator
from typing import Any

from paho.mqtt.client import DISCONNECT, PUBLISH, Client, MQTTMessage, MQTTMessageInfo
from paho.mqtt.enums import LogLevel, MessageState, MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket
from paho.mqtt.matcher import MQTTMatcher
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from bridge.core.fastpaths import verdict

log = logging.getLogger(__name__)

# paho-mqtt releases whose private state this module was checked against: the whole suite (unit
# oracle tests against paho's own code, integration, reliability) passed with it on.
VERIFIED = frozenset({"2.2.0"})
READ_SIZE = 65_536
JOIN_LIMIT = 65_536  # bytes per joined packet
_OK = MQTTErrorCode.MQTT_ERR_SUCCESS
_LOST = MQTTErrorCode.MQTT_ERR_CONN_LOST
_PROTOCOL = MQTTErrorCode.MQTT_ERR_PROTOCOL
_PUBLISH = 0x30
_PUBACK = 0x40
# What paho hands on_publish for a PUBACK of success, or of "no matching subscribers" (0x10:
# delivered, nobody listens, as for most retained state topics), without properties: the same
# every time.
_ACK_REASONS = {code: ReasonCode(PacketTypes.PUBACK, identifier=code) for code in (0x00, 0x10)}
_ACK_NO_PROPERTIES = Properties(PacketTypes.PUBACK)  # type: ignore[no-untyped-call]


def paho_version() -> str:
    """The installed paho-mqtt release."""
    return importlib.metadata.version("paho-mqtt")


def enabled(setting: bool, version: str | None = None) -> bool:
    """Whether to use the fast path: `setting` on and paho at a verified release. Say which, once
    (the caller asks once, at start)."""
    version = version or paho_version()
    return verdict(
        log, name="MQTT", setting=setting, key="mqtt.fast_path", library="paho-mqtt",
        version=version, verified=VERIFIED,
    )  # fmt: skip


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


class PahoFastPath:
    """The fast path for one paho client, from before it connects until it is dropped.

    `loop_read` stands in for `Client.loop_read`, `publish` for `Client.publish`, and `join` runs
    before each `Client.loop_write`; `bridge.mqtt.session.PahoSession` calls them.
    """

    def __init__(self, paho: Client) -> None:
        self._paho = paho
        self._v5 = paho.protocol == MQTTProtocolVersion.MQTTv5
        self._sock: Any = None
        self._rest = bytearray()  # the start of a packet not yet whole
        self._need = 0  # the bytes `_rest` must hold before that packet can be whole
        # paho walks its per-topic callbacks for every message; the bridge registers none, and
        # the walk builds a recursive closure (a reference cycle) per message, which made young
        # collections slow. No public way to turn the walk off.
        paho._on_message_filtered = _NoTopicCallbacks()  # type: ignore[no-untyped-call]  # noqa: SLF001 - no hook

    # -- reading ---------------------------------------------------------------------------------
    def loop_read(self) -> MQTTErrorCode:
        """paho's `loop_read`: read what is there once, handle every whole packet in it.

        A partial packet is kept for the next wake-up; a large packet's bytes are gathered until
        its length is there, then framed once: linear in its size, however many reads it takes.
        """
        paho = self._paho
        sock = paho.socket()
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._sock:  # a new connection: nothing of the old one carries over
            self._sock, self._rest, self._need = sock, bytearray(), 0
        try:
            data = paho._sock_recv(READ_SIZE)  # noqa: SLF001 - paho's TLS-aware recv
        except BlockingIOError:
            return _OK
        except OSError as err:
            paho._easy_log(LogLevel.MQTT_LOG_ERR, "failed to receive on socket: %s", err)  # noqa: SLF001 - paho log
            return self._ended(_LOST)
        if not data:
            return self._ended(_LOST)
        with paho._msgtime_mutex:  # noqa: SLF001 - the keepalive reads it
            paho._last_bytes_received = time.monotonic()  # noqa: SLF001 - as paho reads
        return self._take(data)

    def _take(self, data: bytes) -> MQTTErrorCode:
        if self._rest:
            self._rest += data
            if len(self._rest) < self._need:
                return _OK
            buf = bytes(self._rest)
        else:
            buf = data
        rc, used = self._packets(buf)
        self._rest = bytearray(buf[used:])
        return self._ended(rc) if rc else _OK

    def _ended(self, rc: MQTTErrorCode) -> MQTTErrorCode:
        """As paho's own reader ends a connection on an error: close, on_disconnect."""
        return self._paho._loop_rc_handle(rc)  # noqa: SLF001 - its end

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
            if rc or self._paho.socket() is not sock:  # an error, or a handler closed it
                return rc, pos
        return _OK, pos

    def _handle(self, command: int, body: bytes) -> MQTTErrorCode:
        kind = command & 0xF0
        if kind == _PUBLISH:
            rc = self._publish_received(command, body)
        elif kind == _PUBACK:
            rc = self._acked(body)
        else:
            rc = None
        return self._paho_handles(command, body) if rc is None else rc

    def _paho_handles(self, command: int, body: bytes) -> MQTTErrorCode:
        """paho's own handler for the packet, given as its own reader would give it."""
        paho = self._paho
        packet = paho._in_packet  # noqa: SLF001 - where paho's handlers read the packet
        packet["command"] = command
        packet["remaining_length"] = len(body)
        packet["packet"] = body  # type: ignore[typeddict-item]  # paho only reads and slices it
        try:
            return paho._packet_handle()  # noqa: SLF001 - paho handles
        except MalformedPacket as exc:
            paho._easy_log(LogLevel.MQTT_LOG_ERR, "Received malformed packet: %s", exc)  # noqa: SLF001 - paho log
            return _PROTOCOL
        finally:
            packet["command"] = 0
            packet["remaining_length"] = 0
            packet["packet"] = bytearray()

    def _publish_received(self, command: int, body: bytes) -> MQTTErrorCode | None:
        """A QoS 0 or 1 PUBLISH without properties, as paho's `_handle_publish` takes it;
        None for paho's own handler (QoS 2, properties, a topic alias, invalid UTF-8)."""
        qos = (command >> 1) & 3
        size = len(body)
        cut = 2 + ((body[0] << 8) | body[1]) if size >= 2 else 0
        at = cut + (2 if qos else 0)
        lean = cut > 2 and qos < 2 and at + self._v5 <= size and not (self._v5 and body[at])
        topic = _text(body[2:cut]) if lean else None
        if topic is None:
            return None
        paho = self._paho
        mid = (body[cut] << 8) | body[cut + 1] if qos else 0
        paho._handle_on_message(Received(topic, body[at + self._v5 :], qos, mid, command))  # type: ignore[arg-type]  # noqa: SLF001 - on_message
        if qos == 0 or paho._manual_ack:  # noqa: SLF001 - the setting's only copy
            return _OK
        return paho._send_puback(mid)  # noqa: SLF001 - paho acks

    def _acked(self, body: bytes) -> MQTTErrorCode | None:
        """A PUBACK of success or "no matching subscribers" without properties, as paho's
        `_handle_pubackcomp` takes it; None for paho's own handler."""
        reason = _plain_ack(body, v5=self._v5)
        if reason is None:
            return None
        paho = self._paho
        mid = (body[0] << 8) | body[1]
        if mid not in paho._out_messages:  # noqa: SLF001 - paho's messages in flight
            return _OK
        return paho._do_on_publish(mid, reason, _ACK_NO_PROPERTIES)  # noqa: SLF001 - on_publish

    # -- writing ---------------------------------------------------------------------------------
    def publish(
        self, topic: str, payload: bytes, qos: int, retain: bool, correlation: bytes | None
    ) -> tuple[int, int, bool]:
        """Queue one PUBLISH: (paho's return code, message id, already published). QoS 1 is
        built here, anything else by `Client.publish`. Raises `ValueError` for what paho
        refuses (a wildcard, a topic or payload too long). The correlation data goes out over
        MQTT 5 only (3.1.1 has no properties)."""
        paho = self._paho
        if qos != 1 or not topic or paho.socket() is None:
            info = paho.publish(topic, payload, qos, retain, _properties(correlation, self._v5))
            return info.rc, info.mid, info.is_published()
        name = topic.encode()
        paho._raise_for_invalid_topic(name)  # noqa: SLF001 - paho's own check, its own words
        if len(payload) > 268_435_455:
            raise ValueError("Payload too large.")
        mid = paho._mid_generate()  # noqa: SLF001 - ids shared with paho's other packets
        out = paho._out_messages  # noqa: SLF001 - paho matches the PUBACK here
        if mid in out:  # 65,535 ids all awaiting PUBACK: as paho answers
            return MQTTErrorCode.MQTT_ERR_QUEUE_SIZE, mid, False
        out[mid] = _awaiting_puback(mid, name, payload, retain)
        paho._inflight_messages += 1  # noqa: SLF001 - as publish counts it
        props = _correlation(correlation) if self._v5 else b""
        head = struct.pack("!H", len(name)) + name + struct.pack("!H", mid) + props
        packet = bytes([0x32 | retain]) + _varint(len(head) + len(payload)) + head + payload
        paho._packet_queue(0x30, packet, mid, 1)  # noqa: SLF001 - queue + register the write
        return _OK, mid, False

    def join(self) -> None:
        """Join the packets paho has queued, so that its next `loop_write` sends them at once."""
        coalesce(self._paho._out_packet)  # noqa: SLF001 - paho's write queue


class _NoTopicCallbacks(MQTTMatcher):
    """A matcher that matches nothing, without building anything."""

    def iter_match(self, topic: str) -> Iterator[Any]:
        return iter(())


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


def _properties(correlation: bytes | None, v5: bool) -> Properties | None:
    if correlation is None or not v5:
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
    msg.mid, msg._topic, msg.payload, msg.qos, msg.retain = mid, topic, payload, 1, retain  # noqa: SLF001 - its topic
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


def coalesce(queue: deque[Any]) -> None:
    """Join the packets paho has queued so that one `send` carries many.

    paho writes its queue one packet per `send`, and on loopback each `send` also does the
    receiving side's TCP work and wakes the broker. When several packets wait in one pass of
    the loop (events from many channels, PUBACKs for a batch of requests), they now go out in
    one. A joined packet ends at a packet paho acts on once it is written (a QoS 0 PUBLISH:
    `on_publish`; DISCONNECT: the close) and takes its command, id and info, so paho does the
    same when the joined packet is written; the packets before it need nothing. A run holds
    at most `JOIN_LIMIT` bytes, so a packet that large goes out as it is (never copied), and a
    backlog in pieces. QoS 0 publishes are not joined with each other (each one ends a run).
    """
    if len(queue) < 2:
        return
    joined: list[dict[str, Any]] = []
    run: list[dict[str, Any]] = []
    size = 0
    for packet in queue:
        if run and size + packet["to_process"] > JOIN_LIMIT:
            joined.append(_joined(run, size))
            run, size = [], 0
        run.append(packet)
        size += packet["to_process"]
        if _acted_on(packet):
            joined.append(_joined(run, size))
            run, size = [], 0
    if run:
        joined.append(_joined(run, size))
    if len(joined) < len(queue):
        queue.clear()
        queue.extend(joined)


def _acted_on(packet: dict[str, Any]) -> bool:
    command: int = packet["command"] & 0xF0
    return (command == PUBLISH and packet["qos"] == 0) or command == DISCONNECT


def _joined(run: list[dict[str, Any]], size: int) -> dict[str, Any]:
    """One packet for paho's queue with the bytes of `run` still to send, and the identity of
    its last packet."""
    if len(run) == 1:
        return run[0]
    data = b"".join(p["packet"][p["pos"] :] if p["pos"] else p["packet"] for p in run)
    return {**run[-1], "packet": data, "pos": 0, "to_process": size}
