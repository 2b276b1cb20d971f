"""Each agent's latest metrics in Redis, so that any node can answer for any agent.

A telemetry sink (fed by the host's bus through its own queue: a slow Redis drops
samples there, never agents' messages) writes the newest sample per agent of each batch
in one pipeline, sealed and expiring; the reader asks Redis for agents this node has no
sample of."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import coredis
import trio
from coredis.exceptions import RedisError

from ..clock import wall_ms
from ..host.telemetry import MetricsSample, TelemetryItem
from .sealing import NodeSeal
from .throttle import Throttle

__all__ = ["RedisLatestMetrics"]

log = logging.getLogger("monitoring_ws.cluster")
REDIS_TIMEOUT_S = 2.0


class RedisLatestMetrics:
    """Sink and reader of ``mws:metrics:<agentId>`` (the sample expires after ``ttl_ms``)."""

    name = "cluster_latest_metrics"

    def __init__(
        self, client: coredis.Redis[str], seal: NodeSeal, *, ttl_ms: int, prefix: str = "mws:"
    ) -> None:
        self.client, self.seal, self.ttl_ms, self.prefix = client, seal, ttl_ms, prefix
        self._warning = Throttle()

    def _key(self, agent_id: str) -> str:
        return f"{self.prefix}metrics:{agent_id}"

    async def write(self, items: Sequence[TelemetryItem]) -> None:
        newest: dict[str, MetricsSample] = {}
        for item in items:
            if isinstance(item, MetricsSample):
                newest[item.agent_id] = item
        if not newest:
            return
        now = wall_ms()
        with trio.fail_after(REDIS_TIMEOUT_S):
            async with self.client.pipeline(transaction=False) as pipe:
                for sample in newest.values():
                    value = {"agentId": sample.agent_id, "ts": sample.ts, "values": sample.values}
                    pipe.set(self._key(sample.agent_id), self.seal.seal(value, now), px=self.ttl_ms)

    async def latest_metrics(self, agent_id: str) -> dict[str, Any] | None:
        return (await self.latest_many([agent_id])).get(agent_id)

    async def latest_many(self, agent_ids: Sequence[str]) -> dict[str, dict[str, Any]]:
        """One ``MGET`` whatever the number of agents."""
        if not agent_ids:
            return {}
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                found = await self.client.mget([self._key(agent_id) for agent_id in agent_ids])
        except (RedisError, OSError, trio.TooSlowError) as exc:
            if self._warning.due():
                log.warning("cannot read latest metrics from Redis: %s", exc)
            return {}
        now = wall_ms()
        samples = {}
        for agent_id, data in zip(agent_ids, found, strict=True):
            sample = self._open(agent_id, data, now)
            if sample is not None:
                samples[agent_id] = sample
        return samples

    def _open(self, agent_id: str, data: str | None, now: int) -> dict[str, Any] | None:
        if data is None:
            return None
        sample = self.seal.open(data, now, once=False)
        if sample is None or sample.get("agentId") != agent_id:
            return None  # not sealed by this cluster, or moved from another key
        return {"ts": sample.get("ts"), "values": sample.get("values")}
