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


@pytest.mark.parametrize(
    "raw", ["NaN", "[Infinity]", '{"a": -Infinity}', '{"interval": 1e400}', "-1e999", "[1E+309]"]
)
def test_non_finite_numbers_are_refused(raw: str) -> None:
    with pytest.raises(jsontext.NotFinite):
        jsontext.loads(raw)


def test_a_document_broken_after_its_nan_is_malformed_not_non_finite() -> None:
    with pytest.raises(ValueError) as caught:
        jsontext.loads('{"a": NaN')
    assert not isinstance(caught.value, jsontext.NotFinite)


def test_finite_floats_parse_as_before() -> None:
    assert jsontext.loads("[1.5, -0.0, 1e308, 2.5e-320]") == json.loads(
        "[1.5, -0.0, 1e308, 2.5e-320]"
    )


@pytest.mark.parametrize("value", [float("nan"), float("inf"), {"a": [float("-inf")]}])
def test_the_encoders_cannot_write_non_finite_numbers(value: Any) -> None:
    from bridge.core.envelope import dumps

    with pytest.raises(ValueError):
        jsontext.dumps(value)
    with pytest.raises(ValueError):
        dumps({"data": value})


def test_a_peers_message_is_an_object_or_none_never_an_exception() -> None:
    assert jsontext.object_of(b'{"state": "active"}') == {"state": "active"}
    for raw in (
        b"",
        b"not json",
        b"[1]",
        b'"x"',
        b"[" * 30_000,
        b'{"a":' * 100 + b"1" + b"}" * 100,
    ):
        assert jsontext.object_of(raw) is None, raw[:20]
