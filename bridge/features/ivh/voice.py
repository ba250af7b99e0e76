"""Voice drive (docs/protocol.md A.5 `SEND_AUDIO`, C.5): utterances and their ordering with text.

One audio utterance per session at a time, one ReqId each, Seq from 1, closed by an empty
`Audio` with `IsFinal`. A *file* is paced (`audio.Pacer`); a *live* source's packets go out as
they complete, and a pause of about `StreamMaxInterval` ends it: the bridge then sends the tail
and the closing packet itself, just before the cloud would finalise it without them.

Ordering when text and audio mix (A.5): audio while text speaks first interrupts the text and
waits for its `TextOver`; text or new audio while audio plays first closes the audio and waits
for its `AudioOver`; an interrupt closes the audio and goes out at once. Waits are bounded.
A file whose socket drops stops there (docs/voice.md): its reply is `channel_unavailable`.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from bridge.errors import BridgeError, ChannelError, RequestError
from bridge.features.ivh import audio, frames
from bridge.features.ivh.channel import SessionChannel, _Drive
from bridge.features.ivh.utterances import Drive, Utterances

log = logging.getLogger(__name__)
Result = dict[str, Any]
_TERMINAL = frozenset({"TextOver", "AudioOver", "Error"})
_TEXT = frozenset({"SEND_TEXT", "SEND_STREAMTEXT"})
# The bridge ends a paused live utterance this long before the cloud would (A.5: it
# finalises after StreamMaxInterval without audio), so the tail still goes out.
_PAUSE_MARGIN = 0.2


@dataclass(frozen=True, slots=True)
class Clip:
    """What one `ivh/send_audio` carries: PCM, and whether it is a whole file or a live piece."""

    pcm: memoryview
    file: bool
    final: bool


def clip_of(data: bytes, *, mode: str | None, final: bool) -> Clip:
    """Check the audio before anything is sent; RequestError says what is wrong."""
    if audio.is_wav(data):
        if mode == "live":
            raise RequestError("a WAV is a whole file: send it with mode file, or raw PCM pieces")
        pcm = audio.wav_pcm(data)
        if not pcm:
            raise RequestError("the WAV holds no audio")
        return Clip(pcm, file=True, final=True)
    pcm = audio.check_pcm(memoryview(data))
    if mode == "file":
        if not pcm:
            raise RequestError("audio is empty: a file utterance needs some")
        if kind := audio.sniff(pcm):  # a whole file starts here, as a live utterance does
            raise RequestError(f"the audio looks like {kind}, not raw PCM ({audio.WANTED})")
        return Clip(pcm, file=True, final=True)
    return Clip(pcm, file=False, final=final or not pcm)


@dataclass
class _Speech:
    """What the avatar is saying, as the downstream speak status tells (ReqIds not over yet)."""

    text: set[str] = field(default_factory=set)
    audio: set[str] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)
    plays_until: float = 0.0  # when the audio sent so far should have been played


@dataclass(eq=False)
class _Utterance:
    """One audio utterance: its ReqId, what was sent, and whether it is closed."""

    session_id: str
    file: bool
    req_id: str = field(default_factory=frames.new_req_id)
    seq: int = 0
    packets: int = 0
    size: int = 0  # PCM bytes sent
    on_wire: int = 0  # packets of a file known to be on the socket
    closed: bool = False
    interrupted: bool = False
    stop: asyncio.Event = field(default_factory=asyncio.Event)
    items: list[_Drive] = field(default_factory=list)
    cutter: audio.Cutter = field(default_factory=audio.Cutter)
    timer: asyncio.TimerHandle | None = None

    def frame(self, pcm: bytes | memoryview, *, final: bool = False) -> str:
        """The next `SEND_AUDIO` frame (docs/protocol.md A.5)."""
        self.seq += 1
        if pcm:
            self.packets += 1
            self.size += len(pcm)
        data = {"Audio": base64.b64encode(pcm).decode(), "Seq": self.seq, "IsFinal": final}
        return frames.drive(self.session_id, "SEND_AUDIO", data, self.req_id)

    def send(self, channel: SessionChannel, *packets: bytes | memoryview, close: bool) -> _Drive:
        """Queue packets (and the closing one) as one drive; the first starts the speech."""
        starts = self.seq == 0  # its AudioStart is what an interrupt waits for (A.5)
        out = [self.frame(p) for p in packets]
        if close:
            out.append(self.frame(b"", final=True))
            self.closed = True
            self.stop.set()
        item = channel.enqueue(*out, paced=False, speaks=self.req_id if starts else None)
        self.items = [i for i in self.items if not i.done.done()] + [item]
        return item

    def close(self, channel: SessionChannel) -> _Drive | None:
        """Send the live tail and the closing packet now (None when closed already)."""
        if self.closed:
            return None
        self.interrupted = self.file
        tail = self.cutter.tail()
        return self.send(channel, *([tail] if tail else []), close=True)

    def drop(self) -> None:
        """The socket went: nothing more of it is sent (queued packets are withdrawn)."""
        self.closed = True
        self.stop.set()
        for item in self.items:
            item.done.cancel()

    def result(self) -> Result:
        """The reply's `data`."""
        data: Result = {"req_id": self.req_id, "packets": self.packets}
        data["duration_ms"] = audio.duration_ms(self.size)
        data["mode"] = "file" if self.file else "live"
        if self.interrupted:
            data["interrupted"] = True
        return data


class Voice:
    """The audio utterances and the speech state of every session."""

    def __init__(
        self,
        *,
        utterances: Utterances,
        timeout: float,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._utterances = utterances
        self._timeout = timeout
        self._clock = clock
        self._speech: dict[str, _Speech] = {}
        self._current: dict[str, _Utterance] = {}

    # -- what the cloud says ---------------------------------------------------------------
    def heard(self, session_id: str, event_type: str, data: dict[str, Any]) -> None:
        """A downstream frame: a terminal speak status (or a failure) ends that ReqId's speech."""
        speech = self._speech.get(session_id)
        req_id = data.get("req_id")
        if speech is None or not isinstance(req_id, str):
            return
        if event_type == "drive_failed" or data.get("speak_status") in _TERMINAL:
            speech.text.discard(req_id)
            speech.audio.discard(req_id)
            speech.changed.set()

    def end(self, session_id: str, channel: SessionChannel) -> None:
        """Close a live utterance now (its tail and the closing packet): the session moves to
        another instance, which starts a new one with the next piece."""
        self._close_current(session_id, channel)

    def forget(self, session_id: str) -> None:
        """The session closed: stop its utterance, forget its speech."""
        utt = self._current.pop(session_id, None)
        if utt is not None:
            utt.drop()
        self._speech.pop(session_id, None)

    # -- text drives (called under the session's drive lock) -------------------------------
    async def before_drive(self, sid: str, channel: SessionChannel, parts: list[Drive]) -> None:
        """An interrupt closes the audio at once; text first waits for the audio's AudioOver."""
        roles = [frames.speech_role(command, data) for command, _, data in parts]
        if any(interrupt for _, interrupt in roles):
            self._close_current(sid, channel)
            return
        if not any(command in _TEXT for command, _, _ in parts):
            return
        try:
            await self._quiet_audio(sid, channel)
        except BridgeError:
            self._utterances.drop(sid)  # a stream chunk built for this drive never goes out
            raise
        speech = self._state(sid)
        speech.text.update(r for (_, r, _), (starts, _) in zip(parts, roles, strict=True) if starts)

    # -- audio (called under the session's drive lock) -------------------------------------
    async def take(self, sid: str, channel: SessionChannel, clip: Clip) -> Awaitable[Result | None]:
        """Start or continue an utterance with `clip`; what to await (outside the lock) for
        its reply."""
        live = self._current.get(sid)
        if clip.file or live is None or live.closed or live.file:
            if not clip.file and not clip.pcm:
                return _done({"req_id": None, "packets": 0, "duration_ms": 0, "mode": "live"})
            if not clip.file and (kind := audio.sniff(clip.pcm)):
                raise RequestError(f"the audio looks like {kind}, not raw PCM ({audio.WANTED})")
            await self._quiet_text(sid, channel)
            await self._quiet_audio(sid, channel)
            live = self._current[sid] = _Utterance(sid, file=clip.file)
            self._state(sid).audio.add(live.req_id)
        if clip.file:
            return self._play(live, channel, clip.pcm)
        return self._piece(live, channel, clip)

    def _state(self, sid: str) -> _Speech:
        speech = self._speech.get(sid)
        if speech is None:
            speech = self._speech[sid] = _Speech()
        return speech

    def _close_current(self, sid: str, channel: SessionChannel) -> _Drive | None:
        utt = self._current.get(sid)
        if utt is None or utt.closed:
            return None
        if utt.timer is not None:
            utt.timer.cancel()
        return utt.close(channel)

    async def _quiet_text(self, sid: str, channel: SessionChannel) -> None:
        """A.5: text is speaking and audio comes: an empty-text interrupt, then TextOver."""
        speech = self._state(sid)
        if not speech.text:
            return
        command, req_id, data = self._utterances.interrupt(sid)
        frame = frames.drive(sid, command, data, req_id)
        item = channel.enqueue(frame, paced=command == "SEND_TEXT", interrupt=True)
        await channel.wait(item, self._timeout + channel.text_gap)
        await self._until(speech, speech.text, self._timeout, "TextOver")

    async def _quiet_audio(self, sid: str, channel: SessionChannel) -> None:
        """A.5: audio is playing and something else comes: close it, then AudioOver."""
        closing = self._close_current(sid, channel)
        if closing is not None:
            await channel.wait(closing, self._timeout)
        speech = self._state(sid)
        if speech.audio:
            left = max(0.0, speech.plays_until - self._clock())
            await self._until(speech, speech.audio, self._timeout + left, "AudioOver")

    async def _until(self, speech: _Speech, ids: set[str], wait: float, status: str) -> None:
        try:
            async with asyncio.timeout(wait):
                while ids:
                    speech.changed.clear()
                    await speech.changed.wait()
        except TimeoutError:
            ids.clear()  # a lost frame must not hold the session for good: the next one goes
            raise BridgeError(
                f"no {status} came within {wait:.1f} s (docs/protocol.md A.5 ordering)",
                code="timeout",
                retryable=True,
            ) from None

    # -- a file ----------------------------------------------------------------------------
    async def _play(self, utt: _Utterance, channel: SessionChannel, pcm: memoryview) -> Result:
        """Pace a file's packets: the first `audio.BURST` at once, then one per `audio.GAP`."""
        if utt.closed:  # closed by a drive that came first
            return utt.result()
        packets = audio.packets(pcm)
        pacer = audio.Pacer()
        lost = channel.socket_lost()
        burst = [p for _, p in zip(range(audio.BURST), packets, strict=False)]
        self._plays(utt.session_id, len(pcm))
        await self._sent(utt, utt.send(channel, *burst, close=False), lost, pacer, len(burst))
        for packet in packets:
            if await _sleep_until(utt.stop, pacer.due(self._clock()) - self._clock()):
                break
            await self._sent(utt, utt.send(channel, packet, close=False), lost, pacer, 1)
        if not utt.closed:
            await self._sent(utt, utt.send(channel, close=True), lost, pacer, 0)
        return utt.result()

    def _plays(self, sid: str, size: int) -> None:
        speech = self._state(sid)
        start = max(self._clock(), speech.plays_until)
        speech.plays_until = start + size / (audio.RATE * audio.SAMPLE_BYTES)

    async def _sent(
        self, utt: _Utterance, item: _Drive, lost: asyncio.Future[None], pacer: audio.Pacer, n: int
    ) -> None:
        """Wait until `item` is on the socket; ChannelError if the socket drops first."""
        await asyncio.wait(
            {item.done, lost}, timeout=self._timeout, return_when=asyncio.FIRST_COMPLETED
        )
        if item.done.done() and not item.done.cancelled() and item.done.exception() is None:
            for _ in range(n):
                pacer.sent(self._clock())
            utt.on_wire += n
            return
        utt.drop()
        if utt.session_id in self._current and self._current[utt.session_id] is utt:
            del self._current[utt.session_id]
        sent = f"{utt.on_wire} packets ({utt.on_wire * 160} ms)"
        why = "the command channel dropped" if lost.done() else "the command channel stalled"
        raise ChannelError(f"{why} after {sent} of the utterance: the rest was not sent")

    # -- a live piece ----------------------------------------------------------------------
    def _piece(
        self, utt: _Utterance, channel: SessionChannel, clip: Clip
    ) -> Awaitable[Result | None]:
        """Cut a live piece and queue its whole packets now (in arrival order)."""
        packets = utt.cutter.feed(clip.pcm)
        if clip.final:
            if utt.timer is not None:
                utt.timer.cancel()
            tail = utt.cutter.tail()
            item = utt.send(channel, *packets, *([tail] if tail else []), close=True)
        elif packets:
            item = utt.send(channel, *packets, close=False)
            if utt.seq == len(packets):  # its first packets: the socket's loss ends it
                channel.socket_lost().add_done_callback(lambda _: self._lost_live(utt))
            self._rearm(utt, channel)
        else:
            if utt.timer is None:
                self._rearm(utt, channel)
            return _done(None)
        return self._piece_sent(utt, channel, item, final=clip.final)

    async def _piece_sent(
        self, utt: _Utterance, channel: SessionChannel, item: _Drive, *, final: bool
    ) -> Result | None:
        await channel.wait(item, self._timeout)
        return {**utt.result(), "final": True} if final else None

    def _rearm(self, utt: _Utterance, channel: SessionChannel) -> None:
        """End the utterance if no packet follows for about `StreamMaxInterval` (A.5)."""
        if utt.timer is not None:
            utt.timer.cancel()
        pause = max(0.05, self._utterances.max_interval(utt.session_id) - _PAUSE_MARGIN)
        loop = asyncio.get_running_loop()
        utt.timer = loop.call_later(pause, self._paused, utt, channel)

    def _paused(self, utt: _Utterance, channel: SessionChannel) -> None:
        if self._current.get(utt.session_id) is utt and not utt.closed:
            with contextlib.suppress(ChannelError):
                utt.close(channel)

    def _lost_live(self, utt: _Utterance) -> None:
        if not utt.closed:
            utt.drop()


async def _done(result: Result | None) -> Result | None:
    return result


async def _sleep_until(stop: asyncio.Event, delay: float) -> bool:
    """Sleep `delay` seconds; True at once if `stop` is set (before or meanwhile)."""
    if stop.is_set():
        return True
    if delay <= 0:
        return False
    with contextlib.suppress(TimeoutError):
        async with asyncio.timeout(delay):
            await stop.wait()
    return stop.is_set()
