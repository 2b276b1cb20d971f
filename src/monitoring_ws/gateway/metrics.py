"""The websocket plugin's Prometheus families, read from its counters at scrape time
(the per-message path only increments integers)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from typing import TYPE_CHECKING

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from ..protocol import CloseCode

if TYPE_CHECKING:
    from .view import GatewayView

__all__ = ["GatewayCollector"]

_FRAME_TYPES = ("metrics", "log", "command_result")
#: Closes that refuse a frame, and the reason a dashboard shows for them.
_REJECTED = {
    CloseCode.MALFORMED: "malformed",
    CloseCode.AUTH_FAILED: "bad_signature",
    CloseCode.AGENT_MISMATCH: "agent_mismatch",
    CloseCode.MESSAGE_TOO_BIG: "too_big",
    CloseCode.UNSUPPORTED_DATA: "binary",
    CloseCode.TOO_MANY_ATTEMPTS: "rate_limited",
}


class GatewayCollector:
    """``monitoring_ws_agents_connected``, connects, disconnects by code, frames by type,
    rejected frames by reason, authentication failures and the spool's size."""

    def __init__(self, gateway: GatewayView) -> None:
        self.gateway = gateway

    def collect(self) -> Iterable[Metric]:
        gateway = self.gateway
        stats = Counter(gateway.counters())  # a name not counted yet reads 0
        connected = GaugeMetricFamily(
            "monitoring_ws_agents_connected", "Agents connected to this node.", labels=["transport"]
        )
        connected.add_metric(["websocket"], gateway.connected_here)
        yield connected
        yield CounterMetricFamily(
            "monitoring_ws_agent_connects", "Agents authenticated.", stats["authenticated"]
        )
        closes = CounterMetricFamily(
            "monitoring_ws_agent_disconnects",
            "Connections that ended, by close code and by who closed (server or agent).",
            labels=["code", "by"],
        )
        for key, count in sorted(stats.items()):
            if key.startswith("closed_"):
                closes.add_metric([key.removeprefix("closed_"), "server"], count)
            elif key.startswith("peer_closed_"):
                closes.add_metric([key.removeprefix("peer_closed_"), "agent"], count)
        yield closes
        frames = CounterMetricFamily(
            "monitoring_ws_frames", "Frames accepted from agents, by type.", labels=["type"]
        )
        for kind in _FRAME_TYPES:
            frames.add_metric([kind], stats[f"frames_{kind}"])
        yield frames
        rejected = CounterMetricFamily(
            "monitoring_ws_frames_rejected", "Frames refused, by reason.", labels=["reason"]
        )
        rejected.add_metric(["duplicate"], stats["duplicates"])
        for code, reason in _REJECTED.items():
            rejected.add_metric([reason], stats[f"closed_{int(code)}"])
        yield rejected
        yield CounterMetricFamily(
            "monitoring_ws_auth_failures",
            "Connections closed for a failed signature or a revoked agent (4401).",
            stats[f"closed_{int(CloseCode.AUTH_FAILED)}"],
        )
        yield CounterMetricFamily(
            "monitoring_ws_agent_throttled_seconds",
            "Time agents were not read for, having used their share of the server "
            "(agent_cpu_ms_per_s).",
            gateway.throttled_s,
        )
        yield GaugeMetricFamily(
            "monitoring_ws_spool_bytes",
            "Characters of spooled telemetry in the state database.",
            gateway.spool_bytes,
        )
