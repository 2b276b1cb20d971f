"""A JSON reader that refuses what would make signatures ambiguous or the server fall over.

Refused: duplicate object keys, NaN/Infinity (literal or by overflow), integers outside
+-(2**53 - 1), lone UTF-16 surrogates, and nesting deeper than ``MAX_DEPTH``.
"""

from __future__ import annotations

import json
import re
from itertools import accumulate
from typing import Any

__all__ = ["MAX_DEPTH", "MAX_SAFE_INTEGER", "JSONRejectedError", "loads"]

#: Deepest nesting of arrays and objects accepted; the envelope itself is level 1.
MAX_DEPTH = 64
#: Largest integer magnitude exactly representable as an IEEE 754 double (RFC 8785 3.2.2.3).
MAX_SAFE_INTEGER = 2**53 - 1

# Strings (with escapes) are removed before brackets are counted; only used on deep input.
# An unterminated string runs to the end, so every match attempt succeeds and the scan
# stays linear (a pattern that can fail would retry from every later quote: quadratic).
_STRING = re.compile(r'"(?:[^"\\]++|\\.)*+(?:"|\\?\Z)', re.DOTALL)
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")
_DEPTH_STEP = {"[": 1, "{": 1, "]": -1, "}": -1}
_MAX_INT_LITERAL = len(str(-MAX_SAFE_INTEGER))


class JSONRejectedError(ValueError):
    """The text is not JSON this protocol accepts."""


def _reject_constant(name: str) -> Any:
    raise JSONRejectedError(f"{name} is not a JSON number")


def _parse_int(literal: str) -> int:
    if len(literal) <= _MAX_INT_LITERAL:
        value = int(literal)
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return value
    raise JSONRejectedError("integer outside +-(2**53 - 1)")


def _object(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    obj = dict(pairs)
    if len(obj) != len(pairs):
        raise JSONRejectedError("duplicate object key")
    return obj


def _parse_float(literal: str) -> float:
    value = float(literal)
    if value - value == 0.0:  # false only for inf and nan
        return value
    raise JSONRejectedError("number overflows a double")


_DECODE = json.JSONDecoder(
    object_pairs_hook=_object,
    parse_float=_parse_float,
    parse_int=_parse_int,
    parse_constant=_reject_constant,
).decode


def _check_depth(text: str) -> None:
    brackets = _NOT_BRACKET.sub("", _STRING.sub("", text))
    if brackets and max(accumulate(map(_DEPTH_STEP.__getitem__, brackets))) > MAX_DEPTH:
        raise JSONRejectedError(f"nesting deeper than {MAX_DEPTH}")


def _has_lone_surrogate(value: Any) -> bool:
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, str):
            strings: Any = (item,)
        elif isinstance(item, dict):
            strings = item.keys()
            stack.extend(item.values())
        elif isinstance(item, list):
            stack.extend(item)
            continue
        else:
            continue
        for s in strings:
            try:
                s.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def loads(text: str) -> Any:
    """Parse ``text`` strictly; raise ``JSONRejectedError`` for anything refused."""
    # Counting brackets is cheap; only text that could be too deep is scanned exactly,
    # so the C parser never gets near the interpreter's recursion limit.
    if text.count("[") + text.count("{") > MAX_DEPTH:
        _check_depth(text)
    if not text.isascii():
        try:
            text.encode("utf-8")
        except UnicodeEncodeError:
            raise JSONRejectedError("lone UTF-16 surrogate in the text") from None
    try:
        value = _DECODE(text)
    except JSONRejectedError:
        raise
    except (ValueError, RecursionError) as exc:
        raise JSONRejectedError(f"invalid JSON: {exc}") from None
    if "\\u" in text and _has_lone_surrogate(value):
        raise JSONRejectedError("lone UTF-16 surrogate in a string")
    return value
