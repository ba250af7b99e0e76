"""What an operator reads in the log about an upstream service or a command channel: one line
per change of condition (failing for a new reason, recovered), never one per call.

A service polled every 200 ms with a wrong key would otherwise log five lines a second, or, as
Desk did, none at all. `Condition` also holds what `bridge/health` shows of it: `reachable`
(None until the first call says either way) and the last error, its time in ISO 8601 like every
time in `bridge/health`.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from bridge.core.envelope import now_iso

Clock = Callable[[], float]

# What an auth failure needs from the operator: said once, with the fix.
_AUTH_HINT = "check the credentials in the configuration"


class Condition:
    """The condition of one upstream service or channel, logged once per change. `up` is said
    at the first success (None: nothing, for things as many as the sessions)."""

    def __init__(
        self,
        *,
        name: str,
        logger: logging.Logger,
        clock: Clock = time.monotonic,
        wall: Callable[[], str] = now_iso,
        up: str | None = "reachable",
    ) -> None:
        self._name = name
        self._up = up
        self._log = logger
        self._clock = clock
        self._wall = wall
        self.reachable: bool | None = None
        self.last_error: dict[str, Any] | None = None
        self.last_call: float | None = None  # monotonic time of the last call's outcome
        self._failing: str | None = None  # the reason of the current failure, if any
        self._since = 0.0  # when the current failure began

    @property
    def failing(self) -> str | None:
        """The code of the failure in progress, or None."""
        return self._failing

    def ok(self) -> None:
        """A call got through."""
        self.last_call = self._clock()
        if self._failing is not None:
            self._log.info(
                "%s: recovered after %.1f s (was %s)",
                self._name,
                self.last_call - self._since,
                self._failing,
            )
        elif self.reachable is None and self._up is not None:
            self._log.info("%s: %s", self._name, self._up)
        self._failing = None
        self.reachable, self.last_error = True, None

    def failed(self, code: str, message: str, *, unreachable: bool = True) -> None:
        """A call failed with `code`. `unreachable=False`: an error about the request (a missing
        session, a bad parameter), which says nothing of the service: shown, not logged."""
        self.last_call = self._clock()
        self.last_error = {"code": code, "message": message, "at": self._wall()}
        if not unreachable:
            return
        if self._failing != code:
            said = message if message == code else f"{message} ({code})"
            hint = f"; {_AUTH_HINT}" if code == "auth_failed" else ""
            level = logging.ERROR if code == "auth_failed" else logging.WARNING
            self._log.log(level, "%s: %s%s", self._name, said, hint)
            if self._failing is None:
                self._since = self.last_call
            self._failing = code
        self.reachable = False

    def status(self) -> dict[str, Any]:
        """The `reachable` and `last_error` fields of `bridge/health`."""
        return {"reachable": self.reachable, "last_error": self.last_error}
