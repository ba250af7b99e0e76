"""The envelope's time stamp, on a fake clock, against the standard library's formatting."""

from __future__ import annotations

import time
from datetime import UTC, datetime

import pytest

from bridge.core import envelope

EPOCHS = [0.0, 1_700_000_000.0, 1_700_000_000.0005, 1_700_000_000.123456]
EDGES = [1_700_000_000.4999996, 1_764_657_179.9994, 1_764_657_179.9999996]  # rounding edges


@pytest.mark.parametrize("epoch", [*EPOCHS, *EDGES])
def test_now_iso_is_iso_8601_utc_with_milliseconds(
    monkeypatch: pytest.MonkeyPatch, epoch: float
) -> None:
    monkeypatch.setattr(time, "time", lambda: epoch)
    expected = datetime.fromtimestamp(epoch, UTC).isoformat(timespec="milliseconds")
    assert envelope.now_iso() == expected.replace("+00:00", "Z")


def test_now_iso_moves_with_the_second(monkeypatch: pytest.MonkeyPatch) -> None:
    stamps = []
    for epoch in (1_700_000_000.999, 1_700_000_001.0, 1_700_000_000.5):  # the cache is by second
        monkeypatch.setattr(time, "time", lambda e=epoch: e)
        stamps.append(envelope.now_iso())
    assert stamps == [
        "2023-11-14T22:13:20.999Z",
        "2023-11-14T22:13:21.000Z",
        "2023-11-14T22:13:20.500Z",
    ]
