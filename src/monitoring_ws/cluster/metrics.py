"""The cluster's Prometheus family, read at scrape time."""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from prometheus_client.core import GaugeMetricFamily, Metric

if TYPE_CHECKING:
    from .node import Cluster

__all__ = ["ClusterCollector"]


class ClusterCollector:
    """``monitoring_ws_cluster_redis_up``: whether this node's Redis answers."""

    def __init__(self, cluster: Cluster[Any]) -> None:
        self.cluster = cluster

    def collect(self) -> Iterable[Metric]:
        yield GaugeMetricFamily(
            "monitoring_ws_cluster_redis_up",
            "1 when Redis answered since its last failure.",
            1 if self.cluster.registry.reachable else 0,
        )
