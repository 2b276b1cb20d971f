"""Where agent metrics and logs go: the monitoring module's sink, or the built-in one."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

from ..protocol import LogEntry

__all__ = ["MemorySink", "TelemetrySink"]


class TelemetrySink(Protocol):
    """Receives every accepted metrics sample and log batch (exactly once each)."""

    def metrics(self, agent_id: str, ts: int, values: Mapping[str, Any]) -> None: ...

    def logs(self, agent_id: str, entries: Sequence[LogEntry]) -> None: ...


class MemorySink:
    """Keeps each agent's latest metrics sample and its last ``log_ring`` log lines."""

    def __init__(self, log_ring: int = 200) -> None:
        self.log_ring = log_ring
        self._metrics: dict[str, tuple[int, Mapping[str, Any]]] = {}
        self._logs: dict[str, deque[LogEntry]] = {}

    def metrics(self, agent_id: str, ts: int, values: Mapping[str, Any]) -> None:
        self._metrics[agent_id] = (ts, values)

    def logs(self, agent_id: str, entries: Sequence[LogEntry]) -> None:
        ring = self._logs.get(agent_id)
        if ring is None:
            ring = self._logs[agent_id] = deque(maxlen=self.log_ring)
        ring.extend(entries)

    def latest_metrics(self, agent_id: str) -> dict[str, Any] | None:
        sample = self._metrics.get(agent_id)
        return None if sample is None else {"ts": sample[0], "values": sample[1]}

    def recent_logs(self, agent_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        ring = self._logs.get(agent_id, ())
        entries = list(ring)[-limit:] if limit else list(ring)
        return [entry.to_payload() for entry in entries]
