"""The fast canonicalization path is byte-identical to the reference ``rfc8785``."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest
import rfc8785
from hypothesis import example, given, settings
from hypothesis import strategies as st

from monitoring_ws.protocol import MAX_SAFE_INTEGER, CanonicalizationError, canonicalize
from monitoring_ws.protocol.strictjson import loads

from .strategies import json_values
from .support import examples


@settings(max_examples=examples(3000))
@given(json_values)
@example({"€": 1, "😀": 2, "ﬁ": 3, "a": 4})  # non-BMP key sorts by UTF-16 code units
@example([1e21, 1e-7, -0.0, 5.0, 1e16, 12.5])
@example({"s": 'tab\there "q" \\ \u0001 \u007f \u2028 é 😀'})
def test_canonicalize_equals_rfc8785(value: Any) -> None:
    assert canonicalize(value) == rfc8785.dumps(value)


@settings(max_examples=examples(3000))
@given(json_values, st.sampled_from([{}, {"ensure_ascii": False}, {"indent": 1}]))
@example([4.0, 0.0, -0.0, 1e-5], {})
@example({"k": "e-1 .0, e+2"}, {})
def test_parsed_path_equals_rfc8785(value: Any, style: dict[str, Any]) -> None:
    """The path ``decode`` takes: the reader's output, checked on the encoder's output."""
    parsed = loads(json.dumps(value, **style))
    assert canonicalize(parsed, parsed=True) == rfc8785.dumps(parsed)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (-0.0, b"0"),
        (5.0, b"5"),
        (1e21, b"1e+21"),
        (1e20, b"100000000000000000000"),
        (1e-7, b"1e-7"),
        (0.000001, b"0.000001"),
        ({"b": 1, "a": [True, None]}, b'{"a":[true,null],"b":1}'),
        ('\u0001\b\f\n\r\t"\\/', b'"\\u0001\\b\\f\\n\\r\\t\\"\\\\/"'),
    ],
)
def test_known_forms(value: Any, expected: bytes) -> None:
    assert canonicalize(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        math.nan,
        math.inf,
        [-math.inf],
        MAX_SAFE_INTEGER + 1,
        {"a": -(2**60)},
        {1: "int key"},
        (1, 2),
        {"a": {1, 2}},
        b"bytes",
        "\ud800",
    ],
)
def test_unsignable_values_are_refused(value: Any) -> None:
    with pytest.raises(CanonicalizationError):
        canonicalize(value)


def test_too_deep_values_are_refused() -> None:
    value: Any = []
    for _ in range(100):
        value = [value]
    with pytest.raises(CanonicalizationError):
        canonicalize(value)
