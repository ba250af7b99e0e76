"""JSON that comes from outside: MQTT payloads, Tencent replies, command-channel frames."""

from __future__ import annotations

import json
from typing import Any


def loads(raw: str | bytes | bytearray) -> Any:
    """`json.loads`, except that a document nested too deep for the parser raises ValueError
    like any other malformed one, not RecursionError: every caller that refuses bad JSON then
    refuses it too (a payload of 30,000 `[` went unanswered)."""
    try:
        return json.loads(raw)
    except RecursionError as exc:
        raise ValueError("JSON nested too deeply") from exc
