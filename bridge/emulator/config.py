"""The emulator's settings: credentials, timings and memory bounds, all keyword-only."""

from __future__ import annotations

import secrets
from dataclasses import dataclass, fields
from typing import Any

DESK_SPELLINGS = ("zh", "en", "mixed")


@dataclass(frozen=True, kw_only=True)
class EmulatorConfig:
    """How one emulator listens, which credentials it accepts and how fast it behaves."""

    host: str = "127.0.0.1"
    port: int = 0
    appkey: str
    access_token: str
    sdkappid: int
    identifier: str = "administrator"
    secret_key: str
    prepare_delay: float = 1.0
    speak_delay: float = 0.2
    desk_spelling: str = "zh"
    ws_idle_timeout: float = 180.0
    session_idle_timeout: float = 600.0
    timestamp_window: float = 300
    closed_retention: float = 3600.0
    max_sessions: int = 100_000
    max_closed_sessions: int = 20_000
    max_desk_sessions: int = 100_000
    journal_size: int = 100_000
    desk_callback: str = ""  # where Desk session events are POSTed (docs/protocol.md B.6)

    def __post_init__(self) -> None:
        problems = [p for p in self._problems() if p]
        if problems:
            raise ValueError("invalid emulator config: " + "; ".join(problems))

    def _problems(self) -> list[str]:
        non_negative = ("prepare_delay", "speak_delay")
        positive = (
            *("ws_idle_timeout", "session_idle_timeout", "timestamp_window", "closed_retention"),
            *("max_sessions", "max_closed_sessions", "max_desk_sessions", "journal_size"),
        )
        return [
            *(f"{n} must be >= 0" for n in non_negative if getattr(self, n) < 0),
            *(f"{n} must be > 0" for n in positive if getattr(self, n) <= 0),
            "" if 0 <= self.port <= 65535 else "port must be 0..65535",
            "" if self.desk_spelling in DESK_SPELLINGS else "desk_spelling must be zh, en or mixed",
            "" if _is_http_url(self.desk_callback) else "desk_callback must be an http(s) URL",
            "" if self.appkey and self.access_token else "appkey and access_token are required",
            "" if self.identifier and self.secret_key else "identifier and secret_key are required",
        ]

    @classmethod
    def generate(cls, **overrides: Any) -> EmulatorConfig:
        """A config with fresh random credentials; keyword arguments override any field."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(overrides) - known)
        if unknown:
            raise TypeError(f"unknown EmulatorConfig fields: {', '.join(unknown)}")
        values: dict[str, Any] = {
            "appkey": secrets.token_hex(16),
            "access_token": secrets.token_hex(16),
            # Real SDKAppIDs are 10-digit numbers starting with 14 (docs/protocol.md B.2 demo:
            # 1400000000).
            "sdkappid": 1_400_000_000 + secrets.randbelow(100_000_000),
            "secret_key": secrets.token_hex(32),
        }
        values.update({k: v for k, v in overrides.items() if v is not None})
        return cls(**values)

    def public(self) -> dict[str, Any]:
        """The settings without any credential, for the admin state view."""
        hidden = {"access_token", "secret_key", "desk_callback"}  # a callback path is a secret
        return {f.name: getattr(self, f.name) for f in fields(self) if f.name not in hidden}


def _is_http_url(value: str) -> bool:
    return not value or value.startswith(("http://", "https://"))
