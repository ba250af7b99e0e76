"""The voice drive's pure parts: WAV checks, the live cutter, the file pacer on a fake clock."""

from __future__ import annotations

import itertools
import re
import tracemalloc

import pytest

from bridge.cli.demo.tone import tone_pcm, wav_of
from bridge.config import BridgeConfig
from bridge.errors import RequestError
from bridge.features.ivh import audio
from bridge.features.ivh.voice import clip_of
from tests.support.clock import FakeClock


def test_a_wav_gives_a_view_of_its_samples_not_a_copy() -> None:
    pcm = tone_pcm(0.5)
    wav = wav_of(pcm)
    view = audio.wav_pcm(wav)
    assert bytes(view) == pcm
    assert view.obj is wav  # a memoryview on the payload itself


@pytest.mark.parametrize(
    ("wav", "words"),
    [
        (wav_of(tone_pcm(0.1) * 2, channels=2, rate=44100), "44.1 kHz, 16-bit, stereo PCM"),
        (wav_of(tone_pcm(0.1), rate=8000), "8 kHz, 16-bit, mono PCM"),
        (wav_of(bytes(3200), width=1), "16 kHz, 8-bit, mono PCM"),
        (wav_of(tone_pcm(0.1))[:36], "no fmt or no data chunk"),
        (wav_of(tone_pcm(0.1) + b"\x00"), "odd number of bytes"),
    ],
)
def test_a_wav_the_cloud_cannot_take_is_named(wav: bytes, words: str) -> None:
    with pytest.raises(RequestError) as err:
        audio.wav_pcm(wav)
    assert words in err.value.message
    assert err.value.code == "invalid_payload"


def test_extensible_and_float_formats_are_read_from_the_subformat() -> None:
    wav = bytearray(wav_of(tone_pcm(0.1)))
    wav[20:22] = (0xFFFE).to_bytes(2, "little")
    fmt_size = int.from_bytes(wav[16:20], "little")
    assert fmt_size == 16  # `wave` writes the plain 16-byte chunk: make it extensible
    ext = bytes(wav[20:36]) + (22).to_bytes(2, "little") + bytes(6) + (3).to_bytes(2, "little")
    ext += bytes(14)
    rebuilt = bytes(wav[:16]) + len(ext).to_bytes(4, "little") + ext + bytes(wav[36:])
    with pytest.raises(RequestError) as err:
        audio.wav_pcm(rebuilt)
    assert "IEEE float" in err.value.message


def test_a_streamed_wav_with_an_open_ended_data_size_is_read_to_its_end() -> None:
    pcm = tone_pcm(0.2)
    wav = bytearray(wav_of(pcm))
    wav[40:44] = (0xFFFFFFFF).to_bytes(4, "little")  # what arecord writes to a pipe
    assert bytes(audio.wav_pcm(bytes(wav))) == pcm


def test_clips_file_or_live() -> None:
    assert clip_of(wav_of(tone_pcm(0.2)), mode=None, final=False).file
    live = clip_of(bytes(320), mode=None, final=False)
    assert not live.file and not live.final
    assert clip_of(b"", mode=None, final=False).final  # an empty piece ends the utterance
    assert clip_of(bytes(320), mode="file", final=False).file
    with pytest.raises(RequestError, match="a WAV is a whole file"):
        clip_of(wav_of(tone_pcm(0.2)), mode="live", final=False)
    with pytest.raises(RequestError, match="odd number"):
        clip_of(bytes(3), mode=None, final=False)
    assert audio.sniff(b"ID3\x04rest") == "an MP3 file"
    assert audio.sniff(bytes(64)) is None


@pytest.mark.parametrize(
    ("head", "kind"),
    [(b"RIFX", "a big-endian (RIFX) WAV"), (b"RF64", "an RF64 WAV"), (b"fLaC", "a FLAC file")],
)
def test_other_wav_kinds_and_containers_are_named_not_played(head: bytes, kind: str) -> None:
    """A RIFX or RF64 WAV is not `RIFF`: it was taken for raw PCM and its header played."""
    data = head + wav_of(tone_pcm(0.2))[4:]
    assert audio.sniff(data) == kind
    with pytest.raises(RequestError, match=re.escape(kind)):
        clip_of(data, mode="file", final=False)
    assert not clip_of(data, mode=None, final=False).file  # a live start: refused by `take`


def test_the_audio_limit_takes_a_five_minute_wav() -> None:
    five_minutes = 44 + 300 * 32000
    limit = BridgeConfig().max_audio_payload
    assert five_minutes < limit and five_minutes * 4 // 3 + 200 < limit  # also as base64 JSON
    assert BridgeConfig().max_payload < five_minutes  # the general limit would refuse it


def test_file_packets_are_views_of_5120_bytes_the_last_shorter() -> None:
    pcm = memoryview(bytes(range(256)) * 100)  # 25,600 bytes: 5 packets
    parts = list(audio.packets(pcm[:-100]))
    assert [len(p) for p in parts] == [5120] * 4 + [5020]
    assert all(p.obj is pcm.obj for p in parts)
    assert b"".join(parts) == bytes(pcm[:-100])


@pytest.mark.parametrize("size", [1, 320, 3200, 5119, 5120, 5121, 12_000, 40_000])
def test_the_cutter_recuts_any_pieces_into_whole_packets(size: int) -> None:
    pcm = tone_pcm(3.0)
    cutter = audio.Cutter()
    out: list[bytes] = []
    for start in range(0, len(pcm), size):
        out += [bytes(p) for p in cutter.feed(memoryview(pcm)[start : start + size])]
        assert cutter.pending < audio.PACKET_BYTES  # at most one unfinished packet held
    tail = cutter.tail()
    assert all(len(p) == 5120 for p in out)
    assert b"".join(out) + (tail or b"") == pcm
    assert tail is not None and len(tail) == len(pcm) % 5120
    assert cutter.tail() is None


def test_the_cutter_slices_a_piece_when_nothing_is_pending() -> None:
    piece = memoryview(bytes(5120 * 3))
    packets = audio.Cutter().feed(piece)
    assert len(packets) == 3 and all(isinstance(p, memoryview) for p in packets)


def test_a_five_minute_wav_is_not_copied_per_packet() -> None:
    wav = wav_of(bytes(300 * 32000))
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        total = sum(len(p) for p in audio.packets(audio.wav_pcm(wav)))
        grown = tracemalloc.get_traced_memory()[1] - before
    finally:
        tracemalloc.stop()
    assert total == 300 * 32000
    assert grown < 64 * 1024  # views only; a copy would be 9.6 MB


def test_the_pacer_sends_six_at_once_then_one_per_gap() -> None:
    clock, pacer, sent = FakeClock(), audio.Pacer(), []
    for _ in range(20):
        clock.now = pacer.due(clock.now)
        sent.append(clock.now)
        pacer.sent(clock.now)
    assert sent[:6] == [100.0] * 6
    gaps = [b - a for a, b in itertools.pairwise(sent[5:])]
    assert all(abs(g - audio.GAP) < 1e-9 for g in gaps)
    ratio = (sent[-1] - sent[5]) / ((len(sent) - 6) * audio.PACKET_SECONDS)
    assert 0.75 < ratio < 1  # A.5's bounds, with the margin inside them


def test_a_late_packet_is_caught_up_never_closer_than_the_floor() -> None:
    clock, pacer, sent = FakeClock(), audio.Pacer(), []
    for i in range(40):
        clock.now = pacer.due(clock.now)
        if i == 8:
            clock.now += 0.04  # the loop woke 40 ms late
        sent.append(clock.now)
        pacer.sent(clock.now)
    gaps = [b - a for a, b in itertools.pairwise(sent[5:])]
    assert min(gaps) >= audio.FLOOR - 1e-9  # never below 120 ms + margin: ratio >= 0.75
    assert max(gaps) <= audio.GAP + 0.04 + 1e-9
    assert abs(sent[-1] - (sent[5] + 34 * audio.GAP)) < 1e-9  # back on schedule
    assert 0.75 < audio.FLOOR / audio.PACKET_SECONDS < audio.GAP / audio.PACKET_SECONDS < 1


def test_the_pacer_never_waits_in_the_burst() -> None:
    pacer = audio.Pacer()
    for i in range(6):
        assert pacer.due(float(i)) == float(i)
        pacer.sent(float(i))
    assert pacer.due(5.0) == 5.0 + audio.GAP


def test_duration() -> None:
    assert audio.duration_ms(96000) == 3000
    assert audio.duration_ms(5120) == 160
