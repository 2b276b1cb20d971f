"""Agents' latest metrics as Prometheus gauges (opt-in: ``[server] agent_gauges = true``),
read at scrape time from the telemetry read side, so a Grafana user sees the fleet without
another exporter (docs/operations.md, "Metrics")."""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from typing import Any

from prometheus_client.core import GaugeMetricFamily, Metric

from .telemetry import MemoryTelemetry

__all__ = ["MAX_AGE_S", "AgentGauges"]

#: A sample older than this is not exported (the agent went away, or moved to another node).
MAX_AGE_S = 300.0
_LOADS = ("1m", "5m", "15m")


def _number(value: Any) -> float | None:
    """A finite number an agent sent, or None (agents are not trusted to send shapes)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def _field(values: Mapping[str, Any], name: str, key: str) -> float | None:
    part = values.get(name)
    return _number(part.get(key)) if isinstance(part, Mapping) else None


class AgentGauges:
    """``monitoring_ws_agent_cpu_percent``, ``_memory_percent``, ``_disk_percent`` (by
    mount), ``_load`` (by period) and ``_sample_timestamp_seconds``, by ``agent_id``."""

    def __init__(self, memory: MemoryTelemetry, *, max_age_s: float = MAX_AGE_S) -> None:
        self.memory, self.max_age_s = memory, max_age_s

    def collect(self) -> Iterable[Metric]:
        def gauge(name: str, text: str, *labels: str) -> GaugeMetricFamily:
            return GaugeMetricFamily(
                f"monitoring_ws_agent_{name}", text, labels=["agent_id", *labels]
            )

        cpu = gauge("cpu_percent", "The agent's latest CPU use, percent.")
        memory = gauge("memory_percent", "The agent's latest memory use, percent.")
        disk = gauge("disk_percent", "The agent's latest disk use, percent, by mount.", "mount")
        load = gauge("load", "The agent's latest load average, by period.", "period")
        stamp = gauge("sample_timestamp_seconds", "When the agent took its latest sample.")
        oldest_ms = (time.time() - self.max_age_s) * 1000
        for agent_id, ts, values in self.memory.samples():
            if ts < oldest_ms:
                continue
            stamp.add_metric([agent_id], ts / 1000)
            for family, part in ((cpu, "cpu"), (memory, "memory")):
                if (value := _field(values, part, "percent")) is not None:
                    family.add_metric([agent_id], value)
            disks = values.get("disk")
            for entry in disks if isinstance(disks, list) else ():
                mount = entry.get("mount") if isinstance(entry, Mapping) else None
                used = _number(entry.get("percent")) if isinstance(mount, str) else None
                if isinstance(mount, str) and used is not None:
                    disk.add_metric([agent_id, mount[:256]], used)
            loads = values.get("load")
            periods = zip(_LOADS, loads if isinstance(loads, list) else (), strict=False)
            for period, number in ((p, _number(v)) for p, v in periods):
                if number is not None:
                    load.add_metric([agent_id, period], number)
        yield from (cpu, memory, disk, load, stamp)
