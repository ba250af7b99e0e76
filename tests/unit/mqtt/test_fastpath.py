"""`bridge.mqtt.fastpath` against paho itself, the oracle. Reading: the same bytes, cut anywhere,
reach two paho clients over real socket pairs, one reading with `LeanReader`; both must report
the same messages and acknowledgements, write the same bytes back, and end the same way.
Writing: `LeanWriter` must put the same bytes on the wire and leave paho in the same state as
`paho.publish`."""

from __future__ import annotations

import itertools
import re
import select
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from paho.mqtt.client import Client, MQTTMessageInfo
from paho.mqtt.enums import CallbackAPIVersion, MQTTProtocolVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties

from bridge.mqtt.fastpath import LeanReader, LeanWriter

SENT_MIDS = range(1, 9)  # messages each client has published, awaiting PUBACK


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _packet(command: int, body: bytes) -> bytes:
    return bytes([command]) + _varint(len(body)) + body


def _publish(
    topic: bytes, payload: bytes, qos: int, flags: int, mid: int, props: bytes | None
) -> bytes:
    body = struct.pack("!H", len(topic)) + topic
    if qos:
        body += struct.pack("!H", mid)
    if props is not None:
        body += props
    return _packet(0x30 | (qos << 1) | flags, body + payload)


def _properties(response_topic: str | None, correlation: bytes | None, user: bool) -> bytes:
    props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
    if response_topic is not None:
        props.ResponseTopic = response_topic
    if correlation is not None:
        props.CorrelationData = correlation
    if user:
        props.UserProperty = ("k", "v")
    return props.pack()  # type: ignore[no-untyped-call,no-any-return]


topics = st.text(st.characters(codec="utf-8"), min_size=1, max_size=40)
# larger than one 64 KiB read, built rather than drawn byte by byte (which is slow)
large = st.builds(
    lambda n, seed: (seed * n)[:n], st.integers(70_000, 140_000), st.binary(min_size=1)
)
payloads = st.one_of(st.binary(max_size=300), large)


@st.composite
def publishes(draw: st.DrawFn, *, v5: bool) -> bytes:
    qos = draw(st.sampled_from([0, 1, 1, 2]))
    props = None
    if v5:
        props = draw(
            st.one_of(
                st.just(b"\x00"),
                st.builds(
                    _properties,
                    st.none() | topics,
                    st.none() | st.binary(max_size=16),
                    st.booleans(),
                ),
            )
        )
    topic = draw(topics).encode()
    flags = draw(st.sampled_from([0, 1, 8, 9]))  # retain, dup
    mid = draw(st.integers(1, 65_535))
    return _publish(topic, draw(payloads), qos, flags, mid, props)


@st.composite
def acks(draw: st.DrawFn, *, v5: bool) -> bytes:
    mid = draw(st.sampled_from([*SENT_MIDS, 999]))  # 999: not awaited, passed over
    tail = b""
    if v5:
        tail = draw(
            st.sampled_from(
                [b"", b"\x00", b"\x00\x00", b"\x10", b"\x10\x00", b"\x87\x00", b"\x10\x01"]
            )
        )
    return _packet(0x40, struct.pack("!H", mid) + tail)


def streams(*, v5: bool) -> st.SearchStrategy[bytes]:
    pubrel = st.builds(lambda mid: _packet(0x62, struct.pack("!H", mid)), st.integers(1, 9))
    one = st.one_of(
        publishes(v5=v5),
        publishes(v5=v5),
        acks(v5=v5),
        pubrel,  # completes a QoS 2 message paho holds, if any
        st.just(_packet(0xD0, b"")),  # PINGRESP
    )
    return st.lists(one, min_size=1, max_size=12).map(b"".join)


class Side:
    """A paho client on one end of a socket pair; the test writes the broker's bytes."""

    def __init__(self, *, v5: bool, lean: bool) -> None:
        protocol = MQTTProtocolVersion.MQTTv5 if v5 else MQTTProtocolVersion.MQTTv311
        self.paho = Client(CallbackAPIVersion.VERSION2, protocol=protocol)
        self.seen: list[Any] = []
        self.replies = b""  # what paho wrote back while reading
        self.paho.on_message = self._message
        self.paho.on_publish = self._acked
        self.paho.on_disconnect = lambda *args: self.seen.append(("disconnected", str(args[3])))
        self.ours, self.broker = socket.socketpair()
        self.ours.setblocking(False)
        self.broker.setblocking(False)
        self.paho._sock = self.ours
        for _ in SENT_MIDS:
            info: MQTTMessageInfo = self.paho.publish("out", b"x", qos=1)
            assert info.rc == 0
        self.written()  # those PUBLISHes are not the test's business
        if lean:
            LeanReader(self.paho)

    def _message(self, client: Any, userdata: Any, msg: Any) -> None:
        props = msg.properties.json() if msg.properties is not None else {}  # empty == none
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # paho's message raises on reading such a topic
            topic = "(not UTF-8)"
        self.seen.append((topic, msg.payload, msg.qos, msg.retain, msg.dup, msg.mid, props))

    def _acked(self, client: Any, userdata: Any, mid: int, reason: Any, props: Any) -> None:
        self.seen.append(("acked", mid, str(reason), props.json()))

    def feed(self, chunk: bytes) -> None:
        """Write `chunk` as the socket takes it, reading whenever something waits."""
        view = memoryview(chunk)
        while view and self.paho._sock is not None:
            with suppress(BlockingIOError):
                view = view[self.broker.send(view) :]
            while self.paho._sock is not None and select.select([self.ours], [], [], 0)[0]:
                self.paho.loop_read()  # paho's own reader takes one packet per call
                self.replies += self.written()  # before a close could reset them

    def written(self) -> bytes:
        out = b""
        while True:
            try:
                got = self.broker.recv(1 << 20)
            except (BlockingIOError, ConnectionResetError):
                return out
            if not got:  # paho closed its end
                return out
            out += got

    def close(self) -> None:
        self.ours.close()
        self.broker.close()


@contextmanager
def sides(*, v5: bool) -> Iterator[tuple[Side, Side]]:
    stock, lean = Side(v5=v5, lean=False), Side(v5=v5, lean=True)
    try:
        yield stock, lean
    finally:
        stock.close()
        lean.close()


def _same(stream: bytes, cuts: list[int], *, v5: bool) -> None:
    bounds = sorted({0, len(stream), *(c % (len(stream) + 1) for c in cuts)})
    with sides(v5=v5) as (stock, lean):
        for start, end in itertools.pairwise(bounds):
            stock.feed(stream[start:end])
            lean.feed(stream[start:end])
        assert lean.seen == stock.seen
        assert lean.replies == stock.replies  # the PUBACKs, in the same order
        assert (lean.paho._sock is None) == (stock.paho._sock is None)


fuzz = settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])


@fuzz
@given(streams(v5=True), st.lists(st.integers(0, 1 << 20), max_size=6))
def test_mqtt5_streams_read_as_paho_reads_them(stream: bytes, cuts: list[int]) -> None:
    _same(stream, cuts, v5=True)


@fuzz
@given(streams(v5=False), st.lists(st.integers(0, 1 << 20), max_size=6))
def test_mqtt311_streams_read_as_paho_reads_them(stream: bytes, cuts: list[int]) -> None:
    _same(stream, cuts, v5=False)


BAD = [
    _packet(0x32, b"\x00\x09ab"),  # topic longer than the packet
    _packet(0x40, b"\x00"),  # PUBACK without its id
    b"\x30\xff\xff\xff\xff\x01",  # a Remaining Length of five bytes
    # AUTH, which paho does not handle. (Not the reserved type 0: paho reads a command byte of 0
    # as "no packet started", so whether it notices depends on where a read ends.)
    _packet(0xF0, b""),
    _packet(0x30, b"\x00\x00\x00payload"),  # empty topic without an alias
    _packet(0x32, b"\x00\x01\xff\x00\x01\x00"),  # a topic that is not UTF-8
    _packet(0xE0, b"\x8e\x00"),  # the broker's DISCONNECT: session taken over
]


@fuzz
@given(streams(v5=True), st.sampled_from(BAD), st.integers(0, 1 << 20))
def test_malformed_input_or_a_disconnect_ends_the_connection_as_paho_ends_it(
    stream: bytes, bad: bytes, cut: int
) -> None:
    """Good packets, then a bad one or DISCONNECT: the same messages before it, the same end."""
    _same(stream + bad + stream, [cut], v5=True)


def test_a_packet_split_before_the_reader_took_over_is_finished_by_paho() -> None:
    """Installed mid-packet (paho's own reader read its start), paho completes that packet."""
    packet = _publish(b"t", b"payload", 1, 0, 7, b"\x00")
    side = Side(v5=True, lean=False)
    try:
        side.broker.sendall(packet[:4])
        side.paho.loop_read()
        assert side.paho._in_packet["command"]  # paho holds part of it
        LeanReader(side.paho)
        side.feed(packet[4:] + packet)
        assert [m[0] for m in side.seen] == ["t", "t"]
        assert side.replies == _packet(0x40, b"\x00\x07") * 2
    finally:
        side.close()


def _message_state(msg: Any) -> tuple[Any, ...]:
    return (msg.mid, msg._topic, msg.payload, msg.qos, msg.retain, msg.dup, msg.state)


@fuzz
@given(
    st.text(max_size=30),
    st.one_of(st.binary(max_size=300), large),
    st.booleans(),
    st.none() | st.binary(max_size=40),
    st.booleans(),
)
def test_a_qos1_publish_goes_out_as_paho_sends_it(
    topic: str, payload: bytes, retain: bool, correlation: bytes | None, v5: bool
) -> None:
    with sides(v5=v5) as (stock, lean):
        props = None
        if v5 and correlation is not None:
            props = Properties(PacketTypes.PUBLISH)  # type: ignore[no-untyped-call]
            props.CorrelationData = correlation
        try:
            info = stock.paho.publish(topic, payload, 1, retain, props)
        except ValueError as exc:
            with pytest.raises(ValueError, match=re.escape(str(exc))):
                LeanWriter(lean.paho).publish(topic, payload, 1, retain, correlation)
            return
        got = LeanWriter(lean.paho).publish(topic, payload, 1, retain, correlation)
        assert got == (info.rc, info.mid, info.is_published())
        assert lean.written() == stock.written()
        mid = info.mid
        assert _message_state(lean.paho._out_messages[mid]) == _message_state(
            stock.paho._out_messages[mid]
        )
        assert lean.paho._inflight_messages == stock.paho._inflight_messages
        for side in (stock, lean):
            side.feed(_packet(0x40, struct.pack("!H", mid)))
        assert lean.seen == stock.seen
        assert mid not in lean.paho._out_messages
        assert lean.paho._inflight_messages == stock.paho._inflight_messages


def test_a_message_of_many_reads_is_gathered_whole() -> None:
    """16 MiB arrive in a few hundred reads; the reader gathers them and hands over one message,
    as paho does."""
    payload = bytes(range(256)) * (1 << 16)
    packet = _publish(b"big", payload, 1, 0, 3, b"\x00")
    _same(packet + _packet(0x40, b"\x00\x01"), [1, 70_000], v5=True)
    with sides(v5=True) as (_, lean):
        lean.feed(packet)
        assert [(m[0], len(m[1])) for m in lean.seen] == [("big", len(payload))]
        assert lean.seen[0][1] == payload
