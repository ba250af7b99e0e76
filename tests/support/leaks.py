"""A secrets scanner for every test (docs/reliability.md): log records, MQTT traffic and child-
process logs.

Secrets are registered where tests make them (`settings_for`, the emulator, every UserSig the
code generates); sources register where traffic is seen (each `Probe`, each `BridgeProcess`).
The autouse fixture in tests/conftest.py collects log records and scans everything at teardown.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from bridge.tencent.redact import RedactQueryFilter

# A Desk UserSig: zlib data (0x78 0x9c -> "eJ") in Tencent's base64 variant (`*`, `-`, `_`), as
# a token of its own: a run of the same letters inside standard base64 (`+`, `/`: a WAV in an
# `ivh/send_audio` request) is not one.
USERSIG_SHAPE = re.compile(r"(?<![A-Za-z0-9+/])eJ[A-Za-z0-9*_-]{60,}(?![A-Za-z0-9*_+/-])")
_MIN_SECRET = 4  # shorter values ("k", "u") would match everywhere and prove nothing

Source = Callable[[], Iterable[tuple[str, str]]]


@dataclass
class LeakWatch:
    """The secrets of one test and where its output can be read."""

    secrets: set[str] = field(default_factory=set)
    sources: list[tuple[str, Source]] = field(default_factory=list)
    records: list[str] = field(default_factory=list)

    def secret(self, *values: str | None) -> None:
        """Register values that must never appear anywhere."""
        self.secrets.update(v for v in values if v and len(v) >= _MIN_SECRET)

    def secret_in_urls(self, *values: str) -> None:
        """Register the password of every URL with user information among `values`
        (`mqtt://alice:pw@host`), as given and percent-decoded."""
        for value in values:
            try:
                password = urlsplit(value).password if "://" in value else None
            except ValueError:
                continue
            if password:
                self.secret(password, unquote(password))

    def source(self, name: str, read: Source) -> None:
        """Register a place output can be read from at the end of the test."""
        self.sources.append((name, read))

    def scan(self) -> list[str]:
        """Every hit, as `<where>: <what>` (the secret itself is never printed)."""
        texts: list[tuple[str, str]] = [("log", r) for r in self.records]
        for name, read in self.sources:
            texts.extend((f"{name} {where}", text) for where, text in read())
        hits: list[str] = []
        for where, text in texts:
            hits.extend(f"{where}: configured secret #{i}" for i in self._secret_hits(text))
            if USERSIG_SHAPE.search(text):
                hits.append(f"{where}: a UserSig-shaped string")
        return hits

    def _secret_hits(self, text: str) -> list[int]:
        return [i for i, s in enumerate(sorted(self.secrets)) if s in text]


class _Collect(logging.Handler):
    """Keeps every record as the bridge's own handler would render it (URL filter included)."""

    def __init__(self, into: list[str]) -> None:
        super().__init__(logging.DEBUG)
        self.into = into
        self.addFilter(RedactQueryFilter())
        self.setFormatter(logging.Formatter("%(name)s %(levelname)s %(message)s"))

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self.into.append(self.format(record))
        except Exception:  # a broken record is the test's problem, not the scanner's
            self.into.append(f"{record.name} unformattable record")


_current = LeakWatch()


def watch() -> LeakWatch:
    """The current test's watch."""
    return _current


def begin() -> tuple[LeakWatch, logging.Handler]:
    """A fresh watch, collecting log records from the root logger."""
    global _current
    _current = LeakWatch()
    handler = _Collect(_current.records)
    logging.getLogger().addHandler(handler)
    return _current, handler


def end(handler: logging.Handler) -> list[str]:
    """Stop collecting; the hits."""
    logging.getLogger().removeHandler(handler)
    return _current.scan()


def text_of(payload: bytes) -> str:
    """Bytes as text for scanning (invalid UTF-8 replaced, so nothing is skipped)."""
    return payload.decode("utf-8", "replace")
