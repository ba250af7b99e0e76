"""The session id rule (docs/topics.md): what may name a session in a topic, a payload or the
config. Below every other module, so the config check and the topics share one rule."""

from __future__ import annotations

import re

SESSION_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")


def valid_session_id(value: object) -> bool:
    """Whether `value` can name a session (and so a topic level)."""
    return isinstance(value, str) and SESSION_ID_RE.fullmatch(value) is not None
