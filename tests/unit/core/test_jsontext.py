"""JSON from outside: too deep is malformed (ValueError), and nothing else changes."""

from __future__ import annotations

import json
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bridge.core import jsontext

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner),
    max_leaves=30,
)


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        return 1 + max((_depth(v) for v in value.values()), default=0)
    if isinstance(value, list):
        return 1 + max((_depth(v) for v in value), default=0)
    return 0


@given(JSON, st.integers(min_value=1, max_value=8))
def test_same_as_json_loads_within_the_depth(value: Any, limit: int) -> None:
    text = json.dumps(value)
    if _depth(value) <= limit:
        assert jsontext.loads(text, max_depth=limit) == json.loads(text)
        assert jsontext.loads(text.encode(), max_depth=limit) == json.loads(text)
    else:
        with pytest.raises(ValueError, match="deeper than"):
            jsontext.loads(text, max_depth=limit)
    assert jsontext.loads(text) == json.loads(text)  # no limit asked: none applied


def test_brackets_inside_strings_do_not_count() -> None:
    text = json.dumps({"text": "[[[[[[[[[[{{{{{{{{{{"})
    assert jsontext.loads(text, max_depth=2) == {"text": "[[[[[[[[[[{{{{{{{{{{"}


@pytest.mark.parametrize("raw", ["[" * 30_000, b"[" * 30_000 + b"]" * 30_000])
def test_deeper_than_the_parser_is_a_value_error(raw: str | bytes) -> None:
    with pytest.raises(ValueError, match="nested too deeply"):
        jsontext.loads(raw)
