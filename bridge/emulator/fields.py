"""Typed reads of request fields; each API maps a FieldError to its own "bad parameter" code."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class FieldError(ValueError):
    """A field is missing, has the wrong type, or is out of range."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name} {problem}")
        self.name = name
        self.message = f"{name} {problem}"


def text(
    data: Mapping[str, Any],
    name: str,
    *,
    required: bool = False,
    max_bytes: int | None = None,
) -> str:
    """A string field ('' when absent and optional); ``required`` also means non-empty."""
    value = data.get(name)
    if value is None:
        if required:
            raise FieldError(name, "is required")
        return ""
    if not isinstance(value, str):
        raise FieldError(name, "must be a string")
    if required and not value:
        raise FieldError(name, "must not be empty")
    if max_bytes is not None and len(value.encode()) > max_bytes:
        raise FieldError(name, f"is longer than {max_bytes} bytes")
    return value


def flag(data: Mapping[str, Any], name: str) -> bool:
    """A boolean field (False when absent)."""
    value = data.get(name, False)
    if value is None:
        return False
    if not isinstance(value, bool):
        raise FieldError(name, "must be a boolean")
    return value


def integer(
    data: Mapping[str, Any],
    name: str,
    *,
    default: int | None = None,
    low: int | None = None,
    high: int | None = None,
    numeric_string: bool = False,
) -> int:
    """An integer field (booleans refused); ``default`` None makes it required."""
    value = data.get(name)
    if value is None:
        if default is None:
            raise FieldError(name, "is required")
        return default
    if numeric_string and isinstance(value, str) and _is_small_number(value):
        value = int(value)
    if not isinstance(value, int) or isinstance(value, bool):
        raise FieldError(name, "must be an integer")
    if (low is not None and value < low) or (high is not None and value > high):
        raise FieldError(name, f"must be within {low}..{high}")
    return value


def mapping(data: Mapping[str, Any], name: str) -> dict[str, Any]:
    """An object field ({} when absent)."""
    value = data.get(name)
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise FieldError(name, "must be an object")
    return value


def check_types(data: Mapping[str, Any], types: Mapping[str, type]) -> None:
    """Optional fields: each present one must have its type (bool is never an int here)."""
    for name, kind in types.items():
        value = data.get(name)
        if value is None:
            continue
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise FieldError(name, f"must be a {kind.__name__}")


def _is_small_number(value: str) -> bool:
    return value.isascii() and value.isdigit() and len(value) <= 18
