"""What the emulated cloud saw of each audio utterance: its PCM and a pacing judge.

The rules are docs/protocol.md A.5's. For each ReqId it keeps the byte count and SHA-256 of the
PCM received, the Seqs, how it ended, and the packets' arrival times. The *send real-time
ratio* after the first 6 packets is wall time between packets over the audio time they carry,
measured over windows of the last 6 intervals (about a second of audio; at least 3, so the
first is judged at the 9th packet: one frame late on the wire, the burst's last one too, is no
stutter, and a sender keeping one packet per 120 ms stays at 0.75 or above). A window below
0.75 marks its packet *throttled*, above 1 *stutter*; in a live utterance (one whose first 6
packets did not come in a burst: a microphone's pace) a window above 1 is the source pausing,
counted as *paused*. The utterance's `ratio` is the same over every interval after the 6th.
"""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Any

BYTES_PER_SECOND = 32_000  # 16 kHz, 16-bit, mono
PACKET_BYTES = 5_120
BURST = 6
WINDOW = 6
MIN_WINDOW = 3  # intervals: the first ratio is judged at the 9th packet
THROTTLED, STUTTER = 0.75, 1.0
_KEEP = 32  # utterances remembered per session
_KEEP_ARRIVALS = 20_000  # an hour of packets


@dataclass(eq=False)
class Utterance:
    """One ReqId's audio as received."""

    req_id: str
    packets: int = 0
    size: int = 0  # PCM bytes
    short: int = 0  # packets under 5,120 bytes that were not the last
    seq_gaps: int = 0
    last_seq: int = 0
    ended: str | None = None  # client | auto | interrupted
    final_empty: bool | None = None
    sha: Any = field(default_factory=hashlib.sha256)
    arrivals: list[float] = field(default_factory=list)
    sizes: list[int] = field(default_factory=list)
    wall: list[float] = field(default_factory=list)

    def packet(
        self, seq: int, pcm: bytes | memoryview, *, final: bool, now: float, wall: float
    ) -> None:
        """One accepted packet."""
        if self.last_seq and seq != self.last_seq + 1:
            self.seq_gaps += 1
        self.last_seq = seq
        if pcm:
            if self.sizes and self.sizes[-1] < PACKET_BYTES:
                self.short += 1  # the previous short packet was not the last one after all
            self.packets += 1
            self.size += len(pcm)
            self.sha.update(pcm)
            if len(self.arrivals) < _KEEP_ARRIVALS:
                self.arrivals.append(now)
                self.sizes.append(len(pcm))
                self.wall.append(wall)
        if final:
            self.ended = "client"
            self.final_empty = not pcm

    @property
    def live(self) -> bool:
        """Whether the first 6 packets came at a source's pace, not in a burst."""
        if len(self.arrivals) < BURST:
            return False
        return self.arrivals[BURST - 1] - self.arrivals[0] > BURST * PACKET_BYTES / 2 / 32_000

    def ratios(self) -> list[float]:
        """The windowed ratio at each packet after the 6th."""
        out = []
        for k in range(BURST - 1 + MIN_WINDOW, len(self.arrivals)):
            start = max(BURST - 1, k - WINDOW)
            audio = sum(self.sizes[start:k]) / BYTES_PER_SECOND
            out.append((self.arrivals[k] - self.arrivals[start]) / audio)
        return out

    def report(self) -> dict[str, Any]:
        """What the admin API shows."""
        ratios = self.ratios()
        slow = sum(1 for r in ratios if r > STUTTER)
        whole = None
        if len(self.arrivals) > BURST:  # the whole: every interval after the 6th packet
            audio = sum(self.sizes[BURST - 1 : -1]) / BYTES_PER_SECOND
            whole = round((self.arrivals[-1] - self.arrivals[BURST - 1]) / audio, 4)
        return {
            "req_id": self.req_id,
            "packets": self.packets,
            "bytes": self.size,
            "duration_ms": self.size * 1000 // BYTES_PER_SECOND,
            "sha256": self.sha.hexdigest(),
            "last_seq": self.last_seq,
            "seq_gaps": self.seq_gaps,
            "short_packets": self.short,
            "ended": self.ended,
            "final_empty": self.final_empty,
            "mode": "live" if self.live else "file",
            "ratio": whole,
            "ratio_min": round(min(ratios), 4) if ratios else None,
            "ratio_max": round(max(ratios), 4) if ratios else None,
            "throttled": sum(1 for r in ratios if r < THROTTLED),
            "stutter": 0 if self.live else slow,
            "paused": slow if self.live else 0,
            "arrivals": [round(t, 6) for t in self.wall],
        }


class AudioLog:
    """The last utterances of one session, by ReqId."""

    def __init__(self) -> None:
        self._utterances: OrderedDict[str, Utterance] = OrderedDict()

    def get(self, req_id: str) -> Utterance:
        """The record of `req_id`, created on its first packet."""
        utt = self._utterances.get(req_id)
        if utt is None:
            utt = self._utterances[req_id] = Utterance(req_id)
            while len(self._utterances) > _KEEP:
                self._utterances.popitem(last=False)
        return utt

    def ended(self, req_id: str, how: str) -> None:
        """How an utterance ended, when not by the client's final packet."""
        utt = self._utterances.get(req_id)
        if utt is not None and utt.ended is None:
            utt.ended = how

    def report(self) -> list[dict[str, Any]]:
        """Every remembered utterance, oldest first."""
        return [utt.report() for utt in self._utterances.values()]
