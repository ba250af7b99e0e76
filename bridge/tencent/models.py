"""Typed results of the IVH session manager (docs/protocol.md A.3) and Desk session state (B.3).

Models are frozen, read Tencent's PascalCase names (or the snake_case field names), ignore
unknown fields and tolerate missing optional ones, because the documented field lists and the
examples disagree in places (e.g. `DriverType` is a string in tables and an int in examples).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Annotated, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict
from pydantic.alias_generators import to_pascal

SessionStatusName = Literal["in_progress", "closed", "preparing", "failed", "unknown"]
# "ended" is never read from Tencent: callers use it for error 141005 (docs/topics.md).
DeskState = Literal[
    "not_in_session", "chatbot", "waiting_for_agent", "queuing", "agent", "ended", "unknown"
]

# docs/protocol.md A.3: 1 in progress, 2 closed, 3 preparing, 4 failed; other values are tolerated.
_STATUS_NAMES: dict[int, SessionStatusName] = {
    1: "in_progress",
    2: "closed",
    3: "preparing",
    4: "failed",
}

# docs/protocol.md B.3: both doc spellings, after case-folding and removing whitespace.
_DESK_STATES: dict[str, DeskState] = {
    "notinsession": "not_in_session",
    "chatbot": "chatbot",
    "waitingforagentanswering": "waiting_for_agent",
    "queueing": "queuing",
    "queuing": "queuing",
    "agent": "agent",
}


def status_name(code: int | None) -> SessionStatusName:
    """The docs/topics.md name of a `SessionStatus` code; unknown codes are "unknown"."""
    return _STATUS_NAMES.get(code, "unknown") if code is not None else "unknown"


def normalise_desk_state(raw: str | None) -> DeskState:
    """The docs/topics.md state of a `CurrentState` string, whichever doc spelling it uses."""
    if raw is None:
        return "unknown"
    return _DESK_STATES.get("".join(raw.split()).casefold(), "unknown")


def as_int(value: object) -> int | None:
    """An int, or a string holding one; anything else is None."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, str):
        text = value.strip()
        digits = text[1:] if text.startswith("-") else text
        if digits.isascii() and digits.isdigit():  # not "--5", not "²" (a digit int() refuses)
            with contextlib.suppress(ValueError):  # nor 5,000 digits, past int()'s limit
                return int(text)
    return None


def _lenient_int(value: object) -> object:
    """Accept `3`, `"3"` and `" 3 "`; leave anything else for pydantic to judge."""
    number = as_int(value) if isinstance(value, str) else None
    return value if number is None else number


LenientInt = Annotated[int | None, BeforeValidator(_lenient_int)]


class TencentModel(BaseModel):
    """Base of the response models: frozen, PascalCase aliases, unknown fields ignored."""

    model_config = ConfigDict(
        frozen=True, populate_by_name=True, alias_generator=to_pascal, extra="ignore"
    )


class _WithStatus(TencentModel):
    session_status: LenientInt = None
    play_stream_addr: str | None = None

    @property
    def status_name(self) -> SessionStatusName:
        """`session_status` as a docs/topics.md name."""
        return status_name(self.session_status)


class CreatedSession(_WithStatus):
    """The `createsession` result: status 1 (ready) or 3 (preparing)."""

    req_id: str | None = None
    session_id: str


class SessionStat(_WithStatus):
    """The `statsession` result; `session_id` is the one asked about."""

    req_id: str | None = None
    session_id: str
    speak_status: str | None = None
    is_session_started: bool = False  # stays true once started (docs/protocol.md A.3)
    error_code: LenientInt = None
    error_message: str | None = None


class SessionInfo(_WithStatus):
    """One entry of `listsessionofuin` / `listsessionofprojectid`."""

    session_id: str
    user_id: str | None = None
    driver_type: LenientInt = None
    is_session_started: bool = False
    virtualman_type: str | None = None
    create_type: LenientInt = None
    virtualman_key: str | None = None
    asset_virtualman_key: str | None = None
    virtualman_project_id: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class DeskSessionState:
    """A Desk session's state: `state` normalised, `raw_state` as Tencent sent it."""

    session_id: str | None
    state: DeskState
    raw_state: str | None
    agent_id: str | None
