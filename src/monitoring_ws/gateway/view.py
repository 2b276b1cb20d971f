"""What the ``/api/websocket`` routes, the transport's health and the metrics read of a
gateway: reads only, so that none of them can change its state."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from ..host.presence import AgentInfo
    from .gateway import Gateway

__all__ = ["GatewayView"]


class GatewayView:
    """A read-only face of one gateway node."""

    __slots__ = ("_gateway",)

    def __init__(self, gateway: Gateway) -> None:
        self._gateway = gateway

    @property
    def open_connections(self) -> int:
        """Sockets open on ``/agent`` here, authenticated or not."""
        return len(self._gateway.live)

    @property
    def shutting_down(self) -> bool:
        return self._gateway.live.shutting_down

    @property
    def commands_in_flight(self) -> int:
        return len(self._gateway.commands)

    @property
    def connected_here(self) -> int:
        """Authenticated agents connected to this node."""
        return len(self._gateway.registry.connections())

    def counters(self) -> dict[str, int]:
        """Every counter, sorted by name (connections, authenticated, closed_<code>, ...)."""
        return dict(sorted(self._gateway.stats.items()))

    @property
    def throttled_s(self) -> float:
        return self._gateway.workload.throttled_s

    @property
    def spool_bytes(self) -> int:
        return self._gateway.store.telemetry_bytes

    async def agents(self) -> list[AgentInfo]:
        """Every connected agent (in a cluster, on every node), by id."""
        return sorted(await self._gateway.registry.list(), key=lambda info: info.agent_id)

    async def agent(self, agent_id: str) -> AgentInfo | None:
        return await self._gateway.registry.lookup(agent_id)

    def sessions(self, agent_id: str) -> list[dict[str, Any]]:
        """This node's last sessions of ``agent_id``, since it started."""
        return self._gateway.history.of(agent_id)

    def state(self) -> dict[str, Any]:
        """The body of ``GET /api/websocket/stats``."""
        gateway = self._gateway
        spool, store, commands = gateway.spool, gateway.store, gateway.commands
        return {
            "openConnections": self.open_connections,
            "commandsInFlight": len(commands),
            "counters": self.counters(),
            "deliveryDuplicates": spool.duplicates,
            "unmatchedResults": commands.unmatched_results,
            "store": {
                "commits": store.commits,
                "failedCommits": spool.failed_commits,
                "pendingWrites": store.pending,
            },
        }

    async def telemetry(
        self,
        after: int,
        limit: int,
        agent_id: str | None,
        *,
        kind: str | None,
        since_ms: int,
    ) -> list[dict[str, Any]]:
        """Spooled metrics and logs of this node's agents (``GET /api/websocket/telemetry``)."""
        return await self._gateway.store.telemetry(
            after, limit, agent_id, kind=kind, since_ms=since_ms
        )
