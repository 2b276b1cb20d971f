"""The few numbers a fleet table shows of an agent's latest metrics sample.

Metrics are free-form (docs/protocol.md); this reads the shapes this project's agent sends
(``cpu.percent``, ``memory.percent``, ``disk[].percent``, ``load[0]``) and plain numbers
under the same names, and leaves out what it does not recognise.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["summarize"]


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _percent(value: Any) -> float | None:
    if isinstance(value, Mapping):
        return _number(value.get("percent"))
    return _number(value)


def summarize(ts: Any, values: Mapping[str, Any]) -> dict[str, Any]:
    """``{"ts", "cpu", "memory", "disk", "load"}``: percents (disk: the fullest one) and the
    1-minute load; None where the sample has no such number."""
    disk = values.get("disk")
    if isinstance(disk, list):
        percents = [p for p in map(_percent, disk) if p is not None]
        fullest = max(percents) if percents else None
    else:
        fullest = _percent(disk)
    load = values.get("load")
    if isinstance(load, list):
        load = load[0] if load else None
    return {
        "ts": ts,
        "cpu": _percent(values.get("cpu")),
        "memory": _percent(values.get("memory")),
        "disk": fullest,
        "load": _number(load),
    }
