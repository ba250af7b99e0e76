"""Utterances: ReqId and Seq of streamed text, StreamMaxInterval, interrupts (docs/protocol.md
A.5)."""

from __future__ import annotations

from bridge.features.ivh.utterances import Utterances
from tests.support.clock import FakeClock


def test_one_req_id_per_utterance_and_seq_from_one() -> None:
    utts = Utterances(FakeClock())
    a = utts.chunk("s", "Hello, ", final=False)
    b = utts.chunk("s", "world.", final=True)
    c = utts.chunk("s", "Next", final=False)
    assert a[0] == b[0] == "SEND_STREAMTEXT"
    assert a[1] == b[1] != c[1]
    assert [a[2]["Seq"], b[2]["Seq"], c[2]["Seq"]] == [1, 2, 1]
    assert (a[2]["IsFinal"], b[2]["IsFinal"]) == (False, True)


def test_a_pause_past_stream_max_interval_starts_a_new_utterance() -> None:
    clock = FakeClock()
    utts = Utterances(clock)
    utts.set_max_interval("slow", 4.0)
    first = {sid: utts.chunk(sid, "a", final=False) for sid in ("slow", "fast")}
    clock.now += 2.5
    later = {sid: utts.chunk(sid, "b", final=False) for sid in ("slow", "fast")}
    assert later["slow"][1] == first["slow"][1] and later["slow"][2]["Seq"] == 2
    assert later["fast"][1] != first["fast"][1] and later["fast"][2]["Seq"] == 1


def test_interrupt_inside_an_utterance_carries_the_next_seq() -> None:
    utts = Utterances(FakeClock())
    _, req_id, _ = utts.chunk("s", "a", final=False)
    command, again, data = utts.interrupt("s")
    assert (command, again) == ("SEND_STREAMTEXT", req_id)
    assert data == {"Text": "", "Interrupt": True, "Seq": 2}
    assert utts.chunk("s", "new", final=False)[1] != req_id  # the interrupt ended it


def test_interrupt_outside_an_utterance_is_the_text_interrupt() -> None:
    clock = FakeClock()
    utts = Utterances(clock)
    utts.chunk("s", "a", final=False)
    clock.now += 3.0  # finalised by the cloud meanwhile
    command, _, data = utts.interrupt("s")
    assert (command, data) == ("SEND_TEXT", {"Text": "", "Interrupt": True})


def test_forget_drops_the_session() -> None:
    clock = FakeClock()
    utts = Utterances(clock)
    utts.set_max_interval("s", 6.0)
    first = utts.chunk("s", "a", final=False)
    utts.forget("s")
    clock.now += 2.5
    assert utts.chunk("s", "b", final=False)[1] != first[1]
