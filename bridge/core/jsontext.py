"""JSON that comes from outside: MQTT payloads, Tencent replies, command-channel frames."""

from __future__ import annotations

import functools
import json
import math
from typing import Any

# Deeper than any payload or frame of these protocols, far from the ~990 the encoder manages.
MAX_DEPTH = 64


class TooDeep(ValueError):
    """JSON nested deeper than the parser manages, or than the caller's `max_depth`."""


class NotFinite(ValueError):
    """`NaN`, `Infinity` or a number past a float's range (`1e400`): Python's parser takes them,
    but they are not JSON, and echoed back they break every other client's parser."""


def _constant(name: str) -> float:
    raise NotFinite(f"{name} is not a JSON number")


def _finite(text: str) -> float:
    value = float(text)
    if not math.isfinite(value):
        raise NotFinite(f"{text[:40]} is out of range of a JSON number (a 64-bit float)")
    return value


# One parser, made once: `json.loads` with options builds a decoder and its scanner per call.
_DECODER = json.JSONDecoder(parse_constant=_constant, parse_float=_finite)


@functools.cache
def _encoder(options: tuple[tuple[str, Any], ...]) -> json.JSONEncoder:
    """One encoder per set of options, made once (as for the parser above)."""
    return json.JSONEncoder(ensure_ascii=False, allow_nan=False, **dict(options))


def dumps(value: Any, **options: Any) -> str:
    """`json.dumps` that cannot write `NaN` or `Infinity` (it raises ValueError instead): what
    the bridge writes is JSON for every parser, Node-RED's `JSON.parse` included."""
    return _encoder(tuple(options.items())).encode(value)


def _parse(raw: str | bytes | bytearray) -> Any:
    """`json.loads(raw, parse_constant=..., parse_float=...)` on the one decoder."""
    if not isinstance(raw, str):
        raw = raw.decode(json.detect_encoding(raw), "surrogatepass")
    return _DECODER.decode(raw)


def loads(raw: str | bytes | bytearray, *, max_depth: int | None = None) -> Any:
    """`json.loads`, except that a document nested too deep raises ValueError like any other
    malformed one: deeper than the parser's recursion limit (RecursionError, which callers
    catching ValueError let through: a payload of 30,000 `[` went unanswered), or than
    `max_depth` where the document is sent on, echoed in a reply or an event, since the
    encoder recurses too and fails on what the parser took (~990 levels). Non-finite numbers
    raise `NotFinite`."""
    try:
        value = _parse(raw)
    except RecursionError as exc:
        raise TooDeep("JSON nested too deeply") from exc
    except NotFinite:
        _syntax(raw)  # a document broken after its `NaN` is malformed first
        raise
    if max_depth is not None and _brackets(raw) > max_depth and _deeper(value, max_depth):
        raise TooDeep(f"JSON nested deeper than {max_depth} levels")
    return value


def object_of(raw: bytes) -> dict[str, Any] | None:
    """A JSON object read from another instance's (or anyone's) message, or None: empty,
    malformed, nested deeper than `MAX_DEPTH` (it may be echoed in an event), or not an
    object. The one reader for what peers publish, so none lets a RecursionError through."""
    if not raw:
        return None
    try:
        value = loads(raw, max_depth=MAX_DEPTH)
    except ValueError:
        return None
    return value if isinstance(value, dict) else None


def _syntax(raw: str | bytes | bytearray) -> None:
    """Raise what the plain parser says of `raw`, if anything."""
    try:
        json.loads(raw)
    except RecursionError as exc:
        raise TooDeep("JSON nested too deeply") from exc


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
