"""Voice-drive audio (docs/protocol.md A.5 `SEND_AUDIO`, C.5): WAV checks, packets, pacing. No I/O.

The cloud takes raw PCM, 16 kHz, 16-bit little-endian, mono, in 160 ms packets (5,120 bytes;
the last may be shorter). A file is paced by the sender: the first 6 packets at once, then one
every 120 ms, so that the real-time ratio after the first 6 stays in [0.75, 1]. A live source
(a microphone) is re-cut into packets sent as they complete. Slices are memoryviews: a WAV of
minutes is never copied per packet.
"""

from __future__ import annotations

import struct
from collections.abc import Iterator
from dataclasses import dataclass

from bridge.errors import RequestError

RATE = 16_000
SAMPLE_BYTES = 2
PACKET_BYTES = 5_120  # 160 ms (docs/protocol.md A.5)
PACKET_SECONDS = PACKET_BYTES / (RATE * SAMPLE_BYTES)
BURST = 6  # packets sent at once before pacing starts (A.5)
# A.5: one packet every 120 ms after the burst, and a ratio of at least 0.75 as the cloud sees
# them: the same tenth of margin as text pacing, so jitter on the way cannot bring two closer.
GAP = 0.120 * 1.1
# Catching up after a late one: still 5 ms over 120 ms, for the jitter on the way.
FLOOR = 0.125
_FORMATS = {1: "PCM", 2: "MS ADPCM", 3: "IEEE float", 6: "A-law", 7: "mu-law", 0x11: "IMA ADPCM",
            0x55: "MP3"}  # fmt: skip
_EXTENSIBLE = 0xFFFE
_MAGIC = {b"ID3": "an MP3 file", b"OggS": "an Ogg file", b"fLaC": "a FLAC file",
          b"FORM": "an AIFF file", b"\xff\xfb": "an MP3 file",
          b"RIFX": "a big-endian (RIFX) WAV", b"RF64": "an RF64 WAV"}  # fmt: skip
WANTED = "16 kHz, 16-bit, mono PCM"


@dataclass(frozen=True, slots=True)
class WavFormat:
    """What a WAV's `fmt ` chunk says."""

    tag: int
    channels: int
    rate: int
    bits: int

    @property
    def fits(self) -> bool:
        """Whether the cloud takes it as it is."""
        return (self.tag, self.channels, self.rate, self.bits) == (1, 1, RATE, 16)

    def describe(self) -> str:
        """E.g. `44.1 kHz, 16-bit, stereo PCM`."""
        kind = _FORMATS.get(self.tag, f"format {self.tag:#06x}")
        layout = {1: "mono", 2: "stereo"}.get(self.channels, f"{self.channels} channels")
        return f"{self.rate / 1000:g} kHz, {self.bits}-bit, {layout} {kind}"


def is_wav(data: bytes | memoryview) -> bool:
    """Whether `data` starts with a RIFF/WAVE header."""
    return bytes(data[:4]) == b"RIFF" and bytes(data[8:12]) == b"WAVE"


def wav_pcm(data: bytes) -> memoryview:
    """The PCM samples of a WAV (a view, no copy), or RequestError naming what it is instead."""
    view = memoryview(data)
    fmt, pcm = _chunks(view)
    if fmt is None or pcm is None:
        raise RequestError("the WAV has no fmt or no data chunk")
    if not fmt.fits:
        raise RequestError(f"the WAV is {fmt.describe()}; the digital human takes {WANTED}")
    return check_pcm(pcm, what="the WAV's audio")


def _chunks(view: memoryview) -> tuple[WavFormat | None, memoryview | None]:
    """Walk the RIFF chunks (struct on the header): the format and the data chunk."""
    fmt, pcm, pos = None, None, 12
    while pos + 8 <= len(view) and pcm is None:
        cid, size = struct.unpack_from("<4sI", view, pos)
        body = view[pos + 8 : pos + 8 + size]  # a size past the end (a streamed WAV): the rest
        if cid == b"fmt ":
            fmt = _format(body)
        elif cid == b"data":
            pcm = body
        pos += 8 + size + (size & 1)
    return fmt, pcm


def _format(body: memoryview) -> WavFormat:
    if len(body) < 16:
        raise RequestError("the WAV's fmt chunk is too short")
    tag, channels, rate, _, _, bits = struct.unpack_from("<HHIIHH", body)
    if tag == _EXTENSIBLE and len(body) >= 26:
        (tag,) = struct.unpack_from("<H", body, 24)  # the SubFormat GUID starts with the tag
    return WavFormat(tag, channels, rate, bits)


def check_pcm(pcm: memoryview, *, what: str = "the audio") -> memoryview:
    """Raw PCM as it is, or RequestError when it cannot be whole 16-bit samples."""
    if len(pcm) % SAMPLE_BYTES:
        raise RequestError(
            f"{what} has an odd number of bytes ({len(pcm)}): 16-bit samples come in pairs"
        )
    return pcm


def sniff(data: bytes | memoryview) -> str | None:
    """A container format that is plainly not raw PCM (checked on a live utterance's start)."""
    if bytes(data[:4]) == b"RIFF":
        return "a RIFF file that is not a WAV"
    head = bytes(data[:4])
    return next((name for magic, name in _MAGIC.items() if head.startswith(magic)), None)


def duration_ms(size: int) -> int:
    """Milliseconds of audio in `size` bytes of PCM."""
    return size * 1000 // (RATE * SAMPLE_BYTES)


def packets(pcm: memoryview) -> Iterator[memoryview]:
    """A file's packets: 5,120-byte views, the last one shorter."""
    for start in range(0, len(pcm), PACKET_BYTES):
        yield pcm[start : start + PACKET_BYTES]


class Cutter:
    """Re-cuts a live source's pieces (any size) into whole packets. It keeps at most one
    unfinished packet; a piece is sliced, not copied, when nothing is pending."""

    def __init__(self) -> None:
        self._pending = bytearray()

    @property
    def pending(self) -> int:
        """Bytes waiting for the rest of their packet."""
        return len(self._pending)

    def feed(self, piece: memoryview) -> list[bytes | memoryview]:
        """The packets `piece` completes, in order."""
        out: list[bytes | memoryview] = []
        start = 0
        if self._pending:
            start = min(PACKET_BYTES - len(self._pending), len(piece))
            self._pending += piece[:start]
            if len(self._pending) < PACKET_BYTES:
                return out
            out.append(bytes(self._pending))
            self._pending.clear()
        end = start + (len(piece) - start) // PACKET_BYTES * PACKET_BYTES
        out.extend(piece[i : i + PACKET_BYTES] for i in range(start, end, PACKET_BYTES))
        self._pending += piece[end:]
        return out

    def tail(self) -> bytes | None:
        """The short last packet, if any (the utterance ends)."""
        if not self._pending:
            return None
        rest = bytes(self._pending)
        self._pending.clear()
        return rest


class Pacer:
    """When each packet of a file may leave: the first `BURST` at once, then one per `gap` on a
    schedule from the burst, so a late wake-up is caught up; but never closer than `floor` to
    the previous one, so the ratio the cloud measures stays above 0.75."""

    def __init__(self, *, burst: int = BURST, gap: float = GAP, floor: float = FLOOR) -> None:
        self._burst = burst
        self._gap = gap
        self._floor = floor
        self._start: float | None = None  # when the burst left
        self._last = 0.0
        self._index = 0

    def due(self, now: float) -> float:
        """When the next packet may go (`now` or later)."""
        if self._index < self._burst or self._start is None:
            return now
        planned = self._start + (self._index - self._burst + 1) * self._gap
        return max(now, planned, self._last + self._floor)

    def sent(self, at: float) -> None:
        """The next packet left at `at`."""
        self._index += 1
        self._last = at
        if self._index == self._burst:
            self._start = at
