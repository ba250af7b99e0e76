"""The avatar's mouth: turns accepted drives into timed speak-status frames (docs/protocol.md A.5,
A.6).

One ``Speaker`` per IVH session speaks one utterance at a time. Any new drive interrupts the
current one, which then ends with its terminal status (``TextOver``, or ``AudioOver`` without a
``FinalType``) before the new one starts, as A.5 describes for text. Sequences:

- ``SEND_TEXT``: WaitingTextStart, [Type 4 LLM clauses], TextStart, TextOver.
- ``SEND_STREAMTEXT``: WaitingTextStart, TextStart, per clause SentenceStart [SentenceNext in
  clause mode] SentenceOver, then TextOver once final (sent, or after ``StreamMaxInterval``).
- ``SEND_AUDIO``: WaitingAudioStart, AudioStart, AudioOver with FinalType 1 (the client sent
  the final packet) or 2 (auto-finalised after ``StreamMaxInterval``), once the audio received
  has been played (in real time from AudioStart, waiting for late packets).

A.5's ordering rules for text and audio mixed are enforced (error 110015, "sent at the wrong
time"): audio while text speaks (interrupt it and wait for TextOver first), text or new audio
while audio plays (finish it with IsFinal and wait for AudioOver first). An empty-text interrupt
stops audio as it stops text. ``audio_log`` judges each audio utterance's pacing (audio.py).
"""

from __future__ import annotations

import asyncio
import contextlib
import re
import time
from collections import OrderedDict, deque
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any, Literal

from bridge.emulator.audio import AudioLog

Emit = Callable[[dict[str, Any]], None]
Spawn = Callable[[Coroutine[Any, Any, None], str], "asyncio.Task[None]"]
Kind = Literal["text", "stream", "audio"]

# A clause ends at CJK or ASCII sentence punctuation (a '.' only when a space follows).
_CLAUSE = re.compile(r".*?(?:[。！？；!?;\n]|\.(?=\s))", re.DOTALL)
_FINISHED_MEMORY = 64
AUDIO_PLAYS = "audio is playing: send IsFinal and wait for AudioOver first (A.5)"
TEXT_SPEAKS = "text is speaking: interrupt it and wait for TextOver first (A.5)"


def split_clauses(buffer: str) -> tuple[list[str], str]:
    """Complete clauses at the start of ``buffer``, and the unfinished rest."""
    clauses: list[str] = []
    end = 0
    for match in _CLAUSE.finditer(buffer):
        end = match.end()
        if match.group().strip():
            clauses.append(match.group().strip())
    return clauses, buffer[end:]


def llm_answer(question: str) -> list[str]:
    """The scripted chatbot answer to ``question``, as clauses (Type 4 frames)."""
    return [f"You said: {question.strip()}", "This answer comes from the tencent2mqtt emulator."]


@dataclass(eq=False, kw_only=True)
class Utterance:
    """One drive being spoken; streamed text and audio keep arriving until final."""

    req_id: str
    kind: Kind
    clause_mode: bool = False
    segments: deque[str] = field(default_factory=deque)
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    buffer: str = ""
    last_seq: int = 0
    last_data: float = 0.0
    final: bool = False
    final_type: int = 1
    done: bool = False
    speaking: bool = False  # TextStart or AudioStart sent
    plays_until: float = 0.0  # audio: when what was received will have been played
    task: asyncio.Task[None] | None = None

    def add(self, text: str, now: float) -> None:
        """Queue streamed text (whole clauses in clause mode) or an audio packet."""
        self.last_data = now
        if self.clause_mode or self.kind == "audio":
            if text:
                self.segments.append(text)
        else:
            clauses, self.buffer = split_clauses(self.buffer + text)
            self.segments.extend(clauses)
        self.wake.set()

    def finalise(self, final_type: int) -> None:
        """No more data will come: ``final_type`` 1 from the client, 2 auto (A.6 FinalType)."""
        if self.buffer.strip():
            self.segments.append(self.buffer.strip())
        self.buffer = ""
        self.final = True
        self.final_type = final_type
        self.wake.set()


class Speaker:
    """Speaks one session's drives, emitting Type 3 (and Type 4) downstream payloads."""

    def __init__(
        self,
        *,
        name: str,
        emit: Emit,
        spawn: Spawn,
        delay: float,
        max_interval: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._name = name
        self._emit = emit
        self._spawn = spawn
        self.delay = delay
        self.max_interval = max_interval
        self._clock = clock
        self.current: Utterance | None = None
        self._finished: OrderedDict[str, None] = OrderedDict()
        self.audio_log = AudioLog()

    # --- drives -------------------------------------------------------------------------

    def say(self, req_id: str, text: str, *, chat: bool) -> str | None:
        """SEND_TEXT with text: interrupts text that is playing, then speaks (after an LLM
        answer); an error message while audio plays (A.5)."""
        if self._audio_playing():
            return AUDIO_PLAYS
        utt = self._begin(Utterance(req_id=req_id, kind="text"), "WaitingTextStart")
        answer = llm_answer(text) if chat else None
        spoken = " ".join(answer) if answer else text
        utt.task = self._spawn(self._run_text(utt, spoken, answer), f"{self._name}-text")
        return None

    def interrupt_drive(self) -> bool:
        """An interrupt instruction: A.5 says to send it only after TextStart, so before the
        current utterance speaks it is ignored (False), as a cloud that takes the rule strictly
        would."""
        if self.current is None or not self.current.speaking:
            return False
        return self.interrupt()

    def interrupt(self) -> bool:
        """Stop the current utterance (A.5 interrupt); False when nothing was playing."""
        utt = self.current
        if utt is None:
            return False
        self._cancel(utt)
        self._finish(utt, *self._terminal(utt))
        return True

    def stream(self, req_id: str, *, seq: int, text: str, final: bool, clause: bool) -> str | None:
        """One SEND_STREAMTEXT packet; an error message when it must be refused."""
        utt = self._continue(req_id, "stream", seq)
        if isinstance(utt, str):
            return utt
        if utt is None:
            if self._audio_playing():
                return AUDIO_PLAYS
            utt = self._begin(Utterance(req_id=req_id, kind="stream", clause_mode=clause))
            self._status(utt, "WaitingTextStart")
            utt.task = self._spawn(self._run_stream(utt), f"{self._name}-stream")
        self._feed(utt, seq, text, final)
        return None

    def audio(self, req_id: str, *, seq: int, pcm: bytes, final: bool) -> str | None:
        """One SEND_AUDIO packet (``pcm`` empty in a closing one); or an error."""
        utt = self._continue(req_id, "audio", seq)
        if isinstance(utt, str):
            return utt
        now = self._clock()
        if utt is None:
            if self.current is not None and not self.current.done:
                return AUDIO_PLAYS if self.current.kind == "audio" else TEXT_SPEAKS
            utt = self._begin(Utterance(req_id=req_id, kind="audio"), "WaitingAudioStart")
            utt.plays_until = now + self.delay
            utt.task = self._spawn(self._run_audio(utt), f"{self._name}-audio")
        if pcm:
            utt.plays_until = max(utt.plays_until, now) + len(pcm) / 32_000
        self.audio_log.get(req_id).packet(seq, pcm, final=final, now=now, wall=time.time())
        self._feed(utt, seq, "a" if pcm else "", final)
        return None

    def _audio_playing(self) -> bool:
        utt = self.current
        return utt is not None and utt.kind == "audio" and not utt.done

    def stop(self) -> None:
        """Silence without any frame (the session closed)."""
        if self.current is not None:
            self._cancel(self.current)
            self.current = None

    # --- bookkeeping --------------------------------------------------------------------

    def _continue(self, req_id: str, kind: Kind, seq: int) -> Utterance | str | None:
        """The utterance this packet continues, None for a new one, or an error message."""
        utt = self.current
        if utt is None or utt.req_id != req_id:
            if req_id in self._finished:
                return f"ReqId {req_id} has already finished"
            if seq != 1:  # A.5: Seq starts at 1
                return f"Seq {seq}: the first packet of ReqId {req_id} must have Seq 1"
            return None
        if utt.kind != kind:
            return f"ReqId {req_id} is already used by another kind of drive"
        if utt.final:
            return f"ReqId {req_id} is already final"
        if seq <= utt.last_seq:
            return f"Seq {seq} is not greater than the previous Seq {utt.last_seq}"
        return utt

    def _begin(self, utt: Utterance, waiting: str | None = None) -> Utterance:
        self.interrupt()
        self.current = utt
        utt.last_data = self._clock()
        if waiting:
            self._status(utt, waiting)
        return utt

    def _feed(self, utt: Utterance, seq: int, data: str, final: bool) -> None:
        utt.last_seq = seq
        utt.add(data, self._clock())
        if final:
            utt.finalise(1)

    def _cancel(self, utt: Utterance) -> None:
        if utt.task is not None and not utt.task.done():
            utt.task.cancel()

    def _terminal(self, utt: Utterance) -> tuple[str, dict[str, Any]]:
        return ("AudioOver", {}) if utt.kind == "audio" else ("TextOver", {})

    def _status(self, utt: Utterance, status: str, seq: int = 0, **extra: Any) -> None:
        if status in ("TextStart", "AudioStart"):
            utt.speaking = True
        self._emit({"Type": 3, "ReqId": utt.req_id, "Seq": seq, "SpeakStatus": status, **extra})

    def _finish(self, utt: Utterance, status: str, extra: dict[str, Any], seq: int = 0) -> None:
        if utt.done:
            return
        utt.done = True
        self._status(utt, status, seq, **extra)
        if utt.kind == "audio":
            how = {1: "client", 2: "auto"}.get(extra.get("FinalType", 0), "interrupted")
            self.audio_log.ended(utt.req_id, how)
        self._finished[utt.req_id] = None
        while len(self._finished) > _FINISHED_MEMORY:
            self._finished.popitem(last=False)
        if self.current is utt:
            self.current = None

    async def _pause(self, factor: float = 1.0) -> None:
        await asyncio.sleep(self.delay * factor)

    def _length_factor(self, text: str) -> float:
        # Longer text speaks longer, capped so a test never waits more than 5 speak_delays.
        return min(max(len(text) / 40, 1.0), 5.0)

    async def _next(self, utt: Utterance) -> str | None:
        """The next clause or packet; None when final (auto-finalising after the interval)."""
        while not utt.segments:
            if utt.final:
                return None
            remaining = utt.last_data + self.max_interval - self._clock()
            if remaining <= 0:
                utt.finalise(2)  # A.5: auto-final after StreamMaxInterval without data
                continue
            utt.wake.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(remaining):
                    await utt.wake.wait()
        return utt.segments.popleft()

    # --- runners ------------------------------------------------------------------------

    async def _run_text(self, utt: Utterance, spoken: str, answer: list[str] | None) -> None:
        for seq, clause in enumerate(answer or [], start=1):
            await self._pause(0.5)
            self._emit(_llm_payload(utt.req_id, seq, clause, final=seq == len(answer or [])))
        await self._pause()
        self._status(utt, "TextStart")
        await self._pause(self._length_factor(spoken))
        self._finish(utt, "TextOver", {})

    async def _run_stream(self, utt: Utterance) -> None:
        seq = 0
        while (clause := await self._next(utt)) is not None:
            seq += 1
            if seq == 1:
                self._status(utt, "TextStart", 1)
            self._status(utt, "SentenceStart", seq)
            if utt.clause_mode:
                self._status(utt, "SentenceNext", seq)
            await self._pause(self._length_factor(clause))
            self._status(utt, "SentenceOver", seq)
        self._finish(utt, "TextOver", {}, seq)

    async def _run_audio(self, utt: Utterance) -> None:
        started = False
        while await self._next(utt) is not None:
            if not started:
                started = True
                await self._pause()
                self._status(utt, "AudioStart", utt.last_seq)
        await asyncio.sleep(max(0.0, utt.plays_until - self._clock()))  # the rest plays out
        await self._pause()
        self._finish(utt, "AudioOver", {"FinalType": utt.final_type}, utt.last_seq)


def _llm_payload(req_id: str, seq: int, text: str, *, final: bool) -> dict[str, Any]:
    """A.6 Type 4: one clause of the bound chatbot's answer."""
    return {
        "Type": 4,
        "ReqId": req_id,
        "Seq": seq,
        "Text": text,
        "TextPro": text,
        "TextDisplay": text,
        "ContentType": 1,
        "TtsSupport": True,
        "Final": final,
        "IsHighLight": False,
        "Uninterrupt": False,
        "Muted": False,
    }
