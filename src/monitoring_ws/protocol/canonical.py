"""RFC 8785 (JCS) canonical JSON: the signing input of every envelope.

``rfc8785`` is the reference. The fast path is the C-accelerated ``json`` encoder with
sorted keys, which is byte-identical to RFC 8785 exactly when every object key is ASCII
(so code-point order equals UTF-16 order) and every float prints without an exponent and
without Python's trailing ``.0`` (both print the shortest round-trip digits). Integral
floats within +-2**53 print as integers, as ECMAScript does. Everything else goes to
``rfc8785``. tests/test_canonical.py proves the equality with hypothesis over arbitrary
JSON values.
"""

from __future__ import annotations

import enum
import json
import math
from typing import Any

import rfc8785

from .strictjson import MAX_DEPTH, MAX_SAFE_INTEGER

__all__ = ["CanonicalizationError", "canonicalize", "canonicalize_reference"]

_ENCODER = json.JSONEncoder(
    ensure_ascii=False, sort_keys=True, separators=(",", ":"), allow_nan=False
)
_encode = _ENCODER.encode


class CanonicalizationError(ValueError):
    """The value is not JSON that protocol v1 can sign."""


class _Path(enum.IntEnum):
    """Ordered: a container takes the slowest path any of its members needs."""

    FAST = 0  # encode as is
    INTEGRAL = 1  # encode after integral floats become ints
    REFERENCE = 2  # only rfc8785 gets it right


def _float_path(value: float) -> _Path:
    if not math.isfinite(value):
        raise CanonicalizationError("NaN and Infinity have no JSON form")
    text = repr(value)
    if "e" not in text and not text.endswith(".0"):
        return _Path.FAST
    if value.is_integer() and abs(value) <= MAX_SAFE_INTEGER:
        return _Path.INTEGRAL
    return _Path.REFERENCE


def _scan(value: Any, depth: int = 1) -> _Path:
    """The path ``value`` can take; raises for anything that is not signable JSON."""
    if depth > MAX_DEPTH:
        raise CanonicalizationError(f"nesting deeper than {MAX_DEPTH}")
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return _Path.FAST
    if kind is int:
        if -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER:
            return _Path.FAST
        raise CanonicalizationError("integer outside +-(2**53 - 1)")
    if kind is float:
        return _float_path(value)
    if kind is dict:
        path = _Path.FAST
        for key, item in value.items():
            if type(key) is not str:
                raise CanonicalizationError("object keys must be strings")
            if not key.isascii():
                path = _Path.REFERENCE
            path = max(path, _scan(item, depth + 1))
        return path
    if kind is list:
        path = _Path.FAST
        for item in value:
            path = max(path, _scan(item, depth + 1))
        return path
    raise CanonicalizationError(f"{kind.__name__} is not a JSON type")


def _integral_to_int(value: Any) -> Any:
    kind = type(value)
    if kind is float and value.is_integer():
        return int(value)
    if kind is dict:
        return {key: _integral_to_int(item) for key, item in value.items()}
    if kind is list:
        return [_integral_to_int(item) for item in value]
    return value


def canonicalize_reference(value: Any) -> bytes:
    """RFC 8785 bytes from the reference implementation (slow; the ground truth)."""
    try:
        return bytes(rfc8785.dumps(value))
    except (rfc8785.CanonicalizationError, UnicodeError, RecursionError) as exc:
        raise CanonicalizationError(str(exc)) from None


def _plainly_canonical(text: str) -> bool:
    """Whether the encoder's output of a value from ``strictjson.loads`` (JSON types,
    integers in range) is surely RFC 8785 already: ASCII output has ASCII keys, and an
    unsafe float always leaves ``e+``/``e-`` or a ``.0`` before a delimiter. Strings can
    trip the test too; they then cost a walk of the value."""
    if not text.isascii() or "e+" in text or "e-" in text:
        return False
    return not (".0," in text or ".0]" in text or ".0}" in text or text.endswith(".0"))


def canonicalize(value: Any, *, parsed: bool = False) -> bytes:
    """RFC 8785 bytes of ``value``.

    ``parsed=True`` promises the value came from ``strictjson.loads``, which lets the
    check run on the encoder's output instead of walking the value first.
    """
    if parsed:
        try:
            text = _encode(value)
        except ValueError:  # NaN or Infinity (from an overflowing literal)
            raise CanonicalizationError("NaN and Infinity have no JSON form") from None
        if _plainly_canonical(text):
            return text.encode("ascii")
        # The quick test failed (a string of output holds "e-" or "é" often): walk the
        # value, and keep the text already made when it needed no other path.
        if _scan(value) is _Path.FAST:
            try:
                return text.encode("utf-8")
            except UnicodeEncodeError as exc:
                raise CanonicalizationError("lone UTF-16 surrogate in a string") from exc
    return canonicalize_plain(value)[0]


def canonicalize_plain(value: Any) -> tuple[bytes, bool]:
    """RFC 8785 bytes of ``value``, and whether they hold no number written otherwise
    than a JSON reader gives it back (a float such as 1e16 becomes an integer literal
    there): then a frame may carry them as the payload's JSON."""
    path = _scan(value)
    if path is _Path.REFERENCE:
        return canonicalize_reference(value), False
    if path is _Path.INTEGRAL:
        value = _integral_to_int(value)
    try:
        return _encode(value).encode("utf-8"), path is _Path.FAST
    except UnicodeEncodeError as exc:
        raise CanonicalizationError("lone UTF-16 surrogate in a string") from exc
