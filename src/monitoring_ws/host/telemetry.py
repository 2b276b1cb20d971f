"""The telemetry bus: every accepted metrics sample and log batch, to every sink.

Transports publish synchronously (``metrics``, ``logs``: a dict update and one append
per sink, nothing that waits). Each registered sink has its own bounded queue and task:
a slow or failing sink drops its own items (counted) and stalls nothing else. The read
side (latest metrics, recent logs) is kept in memory here; plugins may add readers that
know more (another node's agents).
"""

from __future__ import annotations

import logging
import time
from collections import OrderedDict, deque
from collections.abc import Mapping, Sequence
from typing import Any, Protocol

import attrs
import trio

from ..protocol import LogEntry
from .events import EventHub

__all__ = [
    "HISTORY_KINDS",
    "MAX_HISTORY_PAGE",
    "LogBatch",
    "MemoryTelemetry",
    "MetricsSample",
    "TelemetryBus",
    "TelemetryHistory",
    "TelemetryItem",
    "TelemetryReader",
    "TelemetrySink",
]

log = logging.getLogger("monitoring_ws.telemetry")


@attrs.frozen
class MetricsSample:
    """One accepted ``metrics`` message (``ts``: the agent's clock, ms since the epoch)."""

    agent_id: str
    ts: int
    values: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"type": "metrics", "agentId": self.agent_id, "ts": self.ts, "values": self.values}


@attrs.frozen
class LogBatch:
    """One accepted ``log`` message."""

    agent_id: str
    entries: tuple[LogEntry, ...]

    def to_json(self) -> dict[str, Any]:
        entries = [entry.to_payload() for entry in self.entries]
        return {"type": "log", "agentId": self.agent_id, "entries": entries}


TelemetryItem = MetricsSample | LogBatch


class TelemetrySink(Protocol):
    """A consumer of telemetry that a plugin registers (a file, an exporter, a database)."""

    name: str

    async def write(self, items: Sequence[TelemetryItem]) -> None:
        """Take a batch, oldest first; raising counts the batch as failed and goes on."""
        ...


class TelemetryReader(Protocol):
    """Where the API reads an agent's telemetry from."""

    async def latest_metrics(self, agent_id: str) -> dict[str, Any] | None:
        """``{"ts": ..., "values": {...}}`` of the newest sample, or None."""
        ...

    async def latest_many(self, agent_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The same for several agents at once (those it knows), in one round trip."""
        ...


#: What a telemetry history holds, and the most one page of it returns.
HISTORY_KINDS = frozenset({"metrics", "log"})
MAX_HISTORY_PAGE = 1000


class TelemetryHistory(Protocol):
    """Kept metrics and logs, a page at a time (``GET /api/telemetry``): a plugin that
    keeps them offers this through ``Plugin.history()``."""

    async def history(
        self, *, after: int, limit: int, agent_id: str | None, kind: str | None, since_ms: int
    ) -> list[dict[str, Any]]:
        """Items with ``id > after`` (received at ``since_ms`` or later), oldest first,
        each ``{"id", "agentId", "type", "receivedAt", ...}``."""
        ...


#: What one remembered log line costs besides its text (the object, the deque slot).
_LINE_OVERHEAD = 200


def _line_bytes(entry: LogEntry) -> int:
    return len(entry.message) + len(entry.source or "") + _LINE_OVERHEAD


class _LogRing:
    """One agent's last lines, bounded by count and by bytes."""

    __slots__ = ("bytes", "lines")

    def __init__(self) -> None:
        self.lines: deque[LogEntry] = deque()
        self.bytes = 0

    def add(self, entry: LogEntry, most: int, most_bytes: int) -> int:
        """Keep ``entry``, drop the oldest past the bounds; how the byte count changed."""
        before = self.bytes
        self.lines.append(entry)
        self.bytes += _line_bytes(entry)
        while len(self.lines) > most or (self.bytes > most_bytes and len(self.lines) > 1):
            self.bytes -= _line_bytes(self.lines.popleft())
        return self.bytes - before


class MemoryTelemetry:
    """Each agent's latest metrics sample and its last ``log_ring`` log lines: at most
    ``log_ring_bytes`` an agent and ``log_bytes`` in all (the agents written to longest
    ago lose their lines first, departed ones included)."""

    def __init__(
        self, log_ring: int = 200, *, log_ring_bytes: int = 256 << 10, log_bytes: int = 64 << 20
    ) -> None:
        self.log_ring, self.log_ring_bytes, self.log_bytes = log_ring, log_ring_bytes, log_bytes
        self._metrics: dict[str, tuple[int, Mapping[str, Any]]] = {}
        #: Least recently written first.
        self._logs: OrderedDict[str, _LogRing] = OrderedDict()
        self._log_total = 0

    @property
    def held_log_bytes(self) -> int:
        """What the rings hold, as counted against ``log_bytes``."""
        return self._log_total

    def metrics(self, agent_id: str, ts: int, values: Mapping[str, Any]) -> None:
        self._metrics[agent_id] = (ts, values)

    def logs(self, agent_id: str, entries: Sequence[LogEntry]) -> None:
        ring = self._logs.pop(agent_id, None) or _LogRing()
        self._logs[agent_id] = ring
        for entry in entries:
            self._log_total += ring.add(entry, self.log_ring, self.log_ring_bytes)
        while self._log_total > self.log_bytes and len(self._logs) > 1:
            _, oldest = self._logs.popitem(last=False)
            self._log_total -= oldest.bytes

    async def latest_metrics(self, agent_id: str) -> dict[str, Any] | None:
        return self.sample(agent_id)

    def sample(self, agent_id: str) -> dict[str, Any] | None:
        sample = self._metrics.get(agent_id)
        return None if sample is None else {"ts": sample[0], "values": sample[1]}

    def samples(self) -> list[tuple[str, int, Mapping[str, Any]]]:
        """Every agent's latest sample: ``(agent_id, ts, values)``."""
        return [(agent_id, ts, values) for agent_id, (ts, values) in self._metrics.items()]

    def recent_logs(self, agent_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        ring = self._logs.get(agent_id)
        lines = list(ring.lines) if ring is not None else []
        entries = lines[-limit:] if limit else lines
        return [entry.to_payload() for entry in entries]


class _Queue:
    """One sink's bounded queue and its counters."""

    def __init__(self, sink: TelemetrySink, limit: int) -> None:
        self.sink, self.limit = sink, limit
        self.items: deque[TelemetryItem] = deque()
        self.ready = trio.Event()
        self.delivered = self.dropped = self.failed = 0
        self.last_complaint = 0.0
        #: A batch is with the sink right now (taken from ``items``, not yet written).
        self.writing = False
        #: Set while nothing is queued or being written (``flush`` waits for it).
        self.idle = trio.Event()
        self.idle.set()

    def put(self, item: TelemetryItem) -> None:
        if len(self.items) >= self.limit:
            self.dropped += 1
            return
        self.items.append(item)
        if self.idle.is_set():
            self.idle = trio.Event()
        self.ready.set()

    def stats(self) -> dict[str, int]:
        return {
            "queued": len(self.items),
            "delivered": self.delivered,
            "dropped": self.dropped,
            "failed": self.failed,
        }


class TelemetryBus:
    """Fans telemetry out to the read side and every registered sink."""

    #: A failing sink is logged at most this often.
    COMPLAINT_INTERVAL_S = 60.0

    def __init__(
        self,
        *,
        log_ring: int = 200,
        queue_limit: int = 10_000,
        batch: int = 500,
        events: EventHub | None = None,
    ) -> None:
        self.memory = MemoryTelemetry(log_ring)
        #: Live events (``GET /api/events``) get every sample and log batch too.
        self._events = events
        self.queue_limit, self.batch = queue_limit, batch
        self._queues: list[_Queue] = []
        self._readers: list[TelemetryReader] = []
        self._history: TelemetryHistory | None = None

    def register(self, sink: TelemetrySink) -> None:
        """Add a sink (before ``run``); it receives what is published from then on."""
        self._queues.append(_Queue(sink, self.queue_limit))

    def set_history(self, history: TelemetryHistory) -> None:
        """Where ``history`` reads (the first plugin that keeps one)."""
        if self._history is None:
            self._history = history

    async def history(
        self, *, after: int, limit: int, agent_id: str | None, kind: str | None, since_ms: int
    ) -> list[dict[str, Any]] | None:
        """A page of the kept history; None when no plugin keeps one."""
        if self._history is None:
            return None
        return await self._history.history(
            after=after, limit=limit, agent_id=agent_id, kind=kind, since_ms=since_ms
        )

    def add_reader(self, reader: TelemetryReader) -> None:
        """A reader asked when this process does not know an agent's telemetry."""
        self._readers.append(reader)

    # The publishing side: called on the event loop for every accepted message.

    def metrics(self, agent_id: str, ts: int, values: Mapping[str, Any], *, size: int = 0) -> None:
        self.memory.metrics(agent_id, ts, values)
        if self._events is not None:
            data = {"sampleTs": ts, "values": values}
            self._events.publish("metrics", agent_id, data, size=size or None)
        if self._queues:
            self._put(MetricsSample(agent_id, ts, values))

    def logs(self, agent_id: str, entries: Sequence[LogEntry], *, size: int = 0) -> None:
        self.memory.logs(agent_id, entries)
        if self._events is not None:
            lines = [entry.to_payload() for entry in entries]
            self._events.publish("log", agent_id, {"entries": lines}, size=size or None)
        if self._queues:
            self._put(LogBatch(agent_id, tuple(entries)))

    def _put(self, item: TelemetryItem) -> None:
        for queue in self._queues:
            queue.put(item)

    # The read side.

    async def latest_metrics(self, agent_id: str) -> dict[str, Any] | None:
        found = await self.memory.latest_metrics(agent_id)
        for reader in self._readers:
            if found is not None:
                break
            found = await reader.latest_metrics(agent_id)
        return found

    async def latest_many(self, agent_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """The newest sample of each agent that has one (this process's, then readers')."""
        found: dict[str, dict[str, Any]] = {}
        missing = []
        for agent_id in agent_ids:
            sample = self.memory.sample(agent_id)
            if sample is None:
                missing.append(agent_id)
            else:
                found[agent_id] = sample
        for reader in self._readers:
            if not missing:
                break
            found |= await reader.latest_many(missing)
            missing = [agent_id for agent_id in missing if agent_id not in found]
        return found

    def recent_logs(self, agent_id: str, limit: int | None = None) -> list[dict[str, Any]]:
        return self.memory.recent_logs(agent_id, limit)

    def stats(self) -> dict[str, dict[str, int]]:
        """Per sink: queued, delivered, dropped (queue full), failed (the sink raised)."""
        return {queue.sink.name: queue.stats() for queue in self._queues}

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Deliver to every sink until cancelled."""
        async with trio.open_nursery() as nursery:
            for queue in self._queues:
                nursery.start_soon(self._deliver, queue)
            task_status.started()

    async def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until every sink has taken what was queued for it."""
        with trio.move_on_after(timeout_s):
            for queue in self._queues:
                await queue.idle.wait()

    async def _deliver(self, queue: _Queue) -> None:
        while True:
            if not queue.items:
                queue.idle.set()
                queue.ready = trio.Event()
                await queue.ready.wait()
            batch = [queue.items.popleft() for _ in range(min(self.batch, len(queue.items)))]
            queue.writing = True
            try:
                await queue.sink.write(batch)
            except Exception as exc:
                queue.failed += len(batch)
                now = time.monotonic()
                if now - queue.last_complaint >= self.COMPLAINT_INTERVAL_S:
                    queue.last_complaint = now
                    log.warning(
                        "telemetry sink %s failed (%d items lost so far): %s: %s",
                        queue.sink.name,
                        queue.failed,
                        type(exc).__name__,
                        exc,
                    )
            else:
                queue.delivered += len(batch)
            finally:
                queue.writing = False
