"""Streamed-text utterances (docs/protocol.md A.5): one ReqId per utterance, Seq from 1. No I/O.

The cloud finalises a stream that gets no data for `StreamMaxInterval` (2 s by default, 2-6 s
when given to `createsession`), so a chunk after a longer pause starts a new utterance. An
interrupt inside a live utterance reuses its ReqId with the next, non-zero Seq (without a Seq
the cloud ignores it); outside one it is the plain `SEND_TEXT` interrupt.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from bridge.features.ivh.frames import new_req_id

DEFAULT_STREAM_MAX_INTERVAL = 2.0
Drive = tuple[str, str, dict[str, Any]]  # (command, ReqId, Data)


@dataclass(slots=True)
class _Utterance:
    req_id: str
    seq: int = 0
    last: float = 0.0


class Utterances:
    """The live utterance of each session, and how long each session's streams may pause."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._live: dict[str, _Utterance] = {}
        self._max_interval: dict[str, float] = {}

    def set_max_interval(self, session_id: str, seconds: float) -> None:
        """The session's `StreamMaxInterval`, when the bridge knows it (it created the session)."""
        self._max_interval[session_id] = seconds

    def chunk(self, session_id: str, text: str, *, final: bool) -> Drive:
        """The `SEND_STREAMTEXT` drive for the next chunk; `final` ends the utterance."""
        utt = self._current(session_id)
        if utt is None:
            utt = self._live[session_id] = _Utterance(new_req_id())
        utt.seq += 1
        utt.last = self._clock()
        if final:
            del self._live[session_id]
        return "SEND_STREAMTEXT", utt.req_id, {"Text": text, "Seq": utt.seq, "IsFinal": final}

    def interrupt(self, session_id: str) -> Drive:
        """The documented empty-text interrupt: inside a live utterance, with its next Seq."""
        utt = self._current(session_id)
        self._live.pop(session_id, None)
        if utt is None:
            return "SEND_TEXT", new_req_id(), {"Text": "", "Interrupt": True}
        return "SEND_STREAMTEXT", utt.req_id, {"Text": "", "Interrupt": True, "Seq": utt.seq + 1}

    def max_interval(self, session_id: str) -> float:
        """Seconds the cloud waits for more of a stream before it finalises it."""
        return self._max_interval.get(session_id, DEFAULT_STREAM_MAX_INTERVAL)

    def live(self, session_id: str) -> bool:
        """Whether the session has a streamed utterance the cloud still holds open."""
        return self._current(session_id) is not None

    def drop(self, session_id: str) -> None:
        """Forget the live utterance (a chunk built for it was never sent)."""
        self._live.pop(session_id, None)

    def forget(self, session_id: str) -> None:
        """The session closed."""
        self._live.pop(session_id, None)
        self._max_interval.pop(session_id, None)

    def _current(self, session_id: str) -> _Utterance | None:
        utt = self._live.get(session_id)
        pause = self._max_interval.get(session_id, DEFAULT_STREAM_MAX_INTERVAL)
        if utt is not None and self._clock() - utt.last >= pause:
            return None  # the cloud has finalised it
        return utt
