"""Prometheus metrics of the server (docs/operations.md, "Metrics").

One registry per server. What happens per command or per commit is observed as it
happens (``ServerMetrics``); what changes per message stays a plain integer in the part
that counts it, read by that part's collector at scrape time, so the hot path gains
nothing but an integer increment.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable, Sequence
from typing import Protocol

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    generate_latest,
)
from prometheus_client.core import Metric

__all__ = ["CONTENT_TYPE", "MetricsCollector", "ServerMetrics"]

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"
_COMMAND_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300)
_COMMIT_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1)


class MetricsCollector(Protocol):
    """What a plugin contributes: metric families read at scrape time."""

    def collect(self) -> Iterable[Metric]: ...


class ServerMetrics:
    """The registry, the instruments shared by every transport, and the exposition."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)
        PlatformCollector(registry=self.registry)
        self._commands = Counter(
            "monitoring_ws_commands",
            "Commands that ended, by transport and outcome (succeeded, failed, timed_out, ...).",
            ["transport", "outcome"],
            registry=self.registry,
        )
        self._durations = Histogram(
            "monitoring_ws_command_duration_seconds",
            "From request to the end of a command, by transport.",
            ["transport"],
            buckets=_COMMAND_BUCKETS,
            registry=self.registry,
        )
        self._counters: dict[tuple[str, str], Counter] = {}
        self._histograms: dict[str, Histogram] = {}
        self._commits = Histogram(
            "monitoring_ws_state_commit_seconds",
            "One grouped commit of the state database (rows and the COMMIT).",
            buckets=_COMMIT_BUCKETS,
            registry=self.registry,
        )

    def command_ended(self, transport: str, outcome: str, seconds: float) -> None:
        # A labelled child looked up once: labels() costs as much as the update itself.
        # Both keys come from the code (transport names, command states): a few each.
        counter = self._counters.get((transport, outcome))
        if counter is None:
            counter = self._counters[transport, outcome] = self._commands.labels(transport, outcome)
        durations = self._histograms.get(transport)
        if durations is None:
            durations = self._histograms[transport] = self._durations.labels(transport)
        counter.inc()
        durations.observe(max(0.0, seconds))

    def state_committed(self, seconds: float) -> None:
        self._commits.observe(seconds)

    def add(self, collectors: Sequence[MetricsCollector]) -> None:
        """Register plugins' collectors (families they alone produce)."""
        for collector in collectors:
            self.registry.register(collector)

    def exposition(self, reaches: Callable[[str], bool] | None = None) -> bytes:
        """The text exposition; with ``reaches``, series of agents it refuses (their
        ``agent_id`` label: a token limited to some agents) are left out."""
        if reaches is None:
            return generate_latest(self.registry)
        return generate_latest(_Reachable(self.registry, reaches))


class _Reachable:
    """A registry's families without the series of agents a token may not see."""

    def __init__(self, registry: CollectorRegistry, reaches: Callable[[str], bool]) -> None:
        self._registry, self._reaches = registry, reaches

    def collect(self) -> Iterable[Metric]:
        for family in self._registry.collect():
            kept = [
                sample
                for sample in family.samples
                if "agent_id" not in sample.labels or self._reaches(sample.labels["agent_id"])
            ]
            if len(kept) == len(family.samples):
                yield family
                continue
            trimmed = copy.copy(family)
            trimmed.samples = kept
            yield trimmed
