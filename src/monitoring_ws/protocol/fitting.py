"""Fitting a message into the receiver's frame limit (no I/O).

A sender whose signed frame would be over the limit trims the payload instead of having
the frame refused (1009) again on every reconnect: strings are cut (at a UTF-8 boundary),
lists lose their tail, objects shrink their largest members first. The payload then says
so: ``truncated: true`` and the original sizes, inside a ``command_result``'s object
``result`` (where the API's caller sees them), else beside the trimmed member
(docs/protocol.md, "Frame limits").
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .envelope import MessageType

__all__ = ["encoded_size", "fit_payload", "shrink"]

#: Below this a string or list is not worth keeping a piece of.
_MIN_PIECE = 16


def encoded_size(value: Any) -> int:
    """Bytes of ``value`` as compact UTF-8 JSON (what it adds to a frame, near enough)."""
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _shrink_str(value: str, budget: int) -> str:
    if encoded_size(value) <= budget:
        return value
    cut = value.encode("utf-8")[: max(0, budget - 2)].decode("utf-8", "ignore")
    while cut and encoded_size(cut) > budget:  # escapes take more than one byte each
        cut = cut[: len(cut) * 3 // 4]
    return cut


def _shrink_list(value: list[Any], budget: int) -> list[Any]:
    kept: list[Any] = []
    used = 2
    for item in value:
        size = encoded_size(item) + 1
        if used + size <= budget:
            kept.append(item)
            used += size
            continue
        room = budget - used - 1
        if room >= _MIN_PIECE and isinstance(item, str | list | dict):
            piece = shrink(item, room)
            if encoded_size(piece) <= room:
                kept.append(piece)
        break
    return kept


def _shrink_dict(value: Mapping[str, Any], budget: int) -> dict[str, Any]:
    shrunk = dict(value)
    excess = encoded_size(shrunk) - budget
    sizes = {key: encoded_size(member) for key, member in value.items()}
    for key in sorted(sizes, key=sizes.__getitem__, reverse=True):
        if excess <= 0:
            break
        member = shrunk[key]
        if not isinstance(member, str | list | dict):
            continue
        smaller = shrink(member, max(0, sizes[key] - excess))
        excess -= sizes[key] - encoded_size(smaller)
        shrunk[key] = smaller
    while excess > 0 and shrunk:  # keys and numbers cannot shrink: drop the largest
        key = max(shrunk, key=lambda k: encoded_size(shrunk[k]) + len(k))
        del shrunk[key]
        excess = encoded_size(shrunk) - budget
    return shrunk


def shrink(value: Any, budget: int) -> Any:
    """``value`` cut so that its compact JSON takes at most about ``budget`` bytes;
    numbers, booleans and null are kept as they are."""
    if isinstance(value, str):
        return _shrink_str(value, budget)
    if isinstance(value, list):
        return _shrink_list(value, budget)
    if isinstance(value, dict):
        return _shrink_dict(value, budget)
    return value


def fit_payload(kind: MessageType, payload: Mapping[str, Any], budget: int) -> dict[str, Any]:
    """A copy of ``payload`` whose compact JSON takes at most about ``budget`` bytes.

    What is trimmed: a ``command_result``'s ``result`` (or its error message), a ``log``
    batch's ``entries``, any other payload's members. ``delivery`` and identifiers stay.
    """
    fitted = dict(payload)
    if kind is MessageType.COMMAND_RESULT:
        target = "result" if "result" in fitted else "error"
    elif kind is MessageType.LOG:
        target = "entries"
    else:
        target = None
    if target is not None and target in fitted:
        original = fitted[target]
        rest = encoded_size({k: v for k, v in fitted.items() if k != target})
        trimmed = shrink(original, max(0, budget - rest - 100))
        marks: dict[str, Any] = {"truncated": True, "originalBytes": encoded_size(original)}
        if kind is MessageType.LOG and isinstance(original, list):
            marks["originalEntries"] = len(original)
        if target == "result" and isinstance(trimmed, dict):
            trimmed.update(marks)  # where the API's caller sees it
        else:
            fitted.update(marks)
        fitted[target] = trimmed
        return fitted
    kept = {k: fitted.pop(k) for k in ("delivery",) if k in fitted}
    fitted = _shrink_dict(fitted, max(0, budget - encoded_size(kept) - 100))
    return {**fitted, **kept, "truncated": True}
