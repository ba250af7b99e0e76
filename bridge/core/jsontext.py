"""JSON that comes from outside: MQTT payloads, Tencent replies, command-channel frames."""

from __future__ import annotations

import json
from typing import Any

# Deeper than any payload or frame of these protocols, far from the ~990 the encoder manages.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """JSON nested deeper than the parser manages, or than the caller's `max_depth`."""


def loads(raw: str | bytes | bytearray, *, max_depth: int | None = None) -> Any:
    """`json.loads`, except that a document nested too deep raises ValueError like any other
    malformed one: deeper than the parser's recursion limit (RecursionError, which callers
    catching ValueError let through: a payload of 30,000 `[` went unanswered), or than
    `max_depth` where the document is sent on, echoed in a reply or an event, since the
    encoder recurses too and fails on what the parser took (~990 levels)."""
    try:
        value = json.loads(raw)
    except RecursionError as exc:
        raise TooDeep("JSON nested too deeply") from exc
    if max_depth is not None and _brackets(raw) > max_depth and _deeper(value, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return value


def _brackets(raw: str | bytes | bytearray) -> int:
    """Opening brackets in the text, a bound on its depth counted at C speed: most documents
    have a few, and need no walk."""
    if isinstance(raw, str):
        return raw.count("[") + raw.count("{")
    return raw.count(b"[") + raw.count(b"{")


def _deeper(value: Any, limit: int) -> bool:
    """Whether containers nest more than `limit` levels (iteratively: no recursion here)."""
    stack = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        if isinstance(item, dict):
            stack.extend((v, depth + 1) for v in item.values() if isinstance(v, dict | list))
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item if isinstance(v, dict | list))
    return False
