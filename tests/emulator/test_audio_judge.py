"""The emulator's pacing judge (docs/protocol.md A.5 SEND_AUDIO), on made-up arrival times."""

from __future__ import annotations

import hashlib
from typing import Any

from bridge.emulator.audio import AudioLog


def judged(times: list[float], sizes: list[int] | None = None) -> dict[str, Any]:
    log = AudioLog()
    utt = log.get("r")
    sizes = sizes or [5120] * len(times)
    for seq, (t, size) in enumerate(zip(times, sizes, strict=True), start=1):
        utt.packet(seq, bytes([seq % 256]) * size, final=False, now=t, wall=t)
    utt.packet(len(times) + 1, b"", final=True, now=times[-1], wall=times[-1])
    [report] = log.report()
    return report


def paced(gap: float, count: int = 30) -> list[float]:
    return [0.0] * 6 + [gap * i for i in range(1, count - 5)]


def test_all_at_once_is_throttled_throughout() -> None:
    got = judged([0.001 * i for i in range(30)])
    assert got["throttled"] == 22 and got["ratio"] is not None and got["ratio"] < 0.1


def test_a_pace_of_132_ms_passes_and_one_of_100_ms_does_not() -> None:
    good = judged(paced(0.132))
    assert (good["throttled"], good["stutter"]) == (0, 0) and 0.8 < good["ratio"] < 0.85
    fast = judged(paced(0.100))
    assert fast["throttled"] == 22


def test_a_slow_file_stutters() -> None:
    got = judged(paced(0.2))
    assert got["stutter"] == 22 and got["paused"] == 0 and got["mode"] == "file"


def test_one_late_frame_on_the_wire_is_not_a_stutter() -> None:
    times = paced(0.132)
    times[12] += 0.03  # late by 30 ms, the next ones on time
    got = judged(times)
    assert (got["throttled"], got["stutter"]) == (0, 0)


def test_a_live_source_pausing_is_paused_not_stutter() -> None:
    times = [0.16 * i for i in range(10)] + [0.16 * i + 1.0 for i in range(10, 20)]
    got = judged(times)
    assert got["mode"] == "live" and got["stutter"] == 0 and got["paused"] > 0


def test_bytes_hash_seqs_and_short_packets() -> None:
    log = AudioLog()
    utt = log.get("r")
    utt.packet(1, b"ab" * 100, final=False, now=0, wall=0)  # short, and not the last
    utt.packet(3, b"cd" * 2560, final=False, now=0, wall=0)  # Seq 2 missing
    utt.packet(4, b"", final=True, now=0, wall=0)
    [got] = log.report()
    assert got["bytes"] == 200 + 5120
    assert got["sha256"] == hashlib.sha256(b"ab" * 100 + b"cd" * 2560).hexdigest()
    assert (got["short_packets"], got["seq_gaps"], got["ended"], got["final_empty"]) == (
        1, 1, "client", True,
    )  # fmt: skip
    log.ended("r", "auto")
    assert log.report()[0]["ended"] == "client"  # the client's final came first
