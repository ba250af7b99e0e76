"""Counts the reliability suite reports (faults injected, commands sent/executed/lost, ...).

Tests add to a process-wide counter; `tests/reliability/conftest.py` writes it to
`.reliability/summary.json` at the end of the run, which `scripts/reliability` prints.
"""

from __future__ import annotations

from collections import Counter

COUNTS: Counter[str] = Counter()


def add(key: str, n: int = 1) -> None:
    """Add `n` to figure `key`."""
    COUNTS[key] += n
