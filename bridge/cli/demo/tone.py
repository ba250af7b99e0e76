"""A generated tone as the digital human takes it (16 kHz, 16-bit, mono): the demo's voice."""

from __future__ import annotations

import io
import math
import struct
import wave

RATE = 16_000


def tone_pcm(seconds: float, *, freq: float = 440.0, volume: float = 0.3) -> bytes:
    """Raw PCM of a sine tone whose pitch wanders a little, so every packet differs."""
    count = round(seconds * RATE)
    amp = volume * 32767
    samples = (
        round(amp * math.sin(2 * math.pi * freq * (1 + 0.05 * i / max(count, 1)) * i / RATE))
        for i in range(count)
    )
    return struct.pack(f"<{count}h", *samples)


def wav_of(pcm: bytes, *, rate: int = RATE, channels: int = 1, width: int = 2) -> bytes:
    """`pcm` in a WAV container (the standard library's `wave`)."""
    out = io.BytesIO()
    with wave.open(out, "wb") as w:
        w.setnchannels(channels)
        w.setsampwidth(width)
        w.setframerate(rate)
        w.writeframes(pcm)
    return out.getvalue()


def tone_wav(seconds: float, *, freq: float = 440.0) -> bytes:
    """A WAV file of `tone_pcm`."""
    return wav_of(tone_pcm(seconds, freq=freq))
