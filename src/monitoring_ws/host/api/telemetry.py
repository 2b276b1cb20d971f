"""The telemetry read side, served by the host whatever the transport: an agent's recent
logs, its sessions, and the history a plugin keeps (docs/api.md, "Any transport"). The
dashboard reads these; the websocket plugin's ``/api/websocket/*`` routes stay for the
seed's callers."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response

from ...transports import KnowsSessions
from ...web import bad_agent, error, history_query, recent_logs_answer
from ..config import ServerSettings
from ..router import TransportRouter
from ..telemetry import HISTORY_KINDS, MAX_HISTORY_PAGE, TelemetryBus

__all__ = ["add_telemetry_routes"]


def add_telemetry_routes(
    app: Quart, server: ServerSettings, router: TransportRouter, telemetry: TelemetryBus
) -> None:
    @app.get("/api/agents/<agent_id>/logs")
    async def agent_logs(agent_id: str) -> dict[str, Any] | Response:
        """The last log lines of the agent (the host's ring of ``log_ring`` lines)."""
        return recent_logs_answer(telemetry.recent_logs, agent_id, server.log_ring)

    @app.get("/api/agents/<agent_id>/sessions")
    async def agent_sessions(agent_id: str) -> dict[str, Any] | Response:
        """Its recent sessions on this node, newest first, from every transport that
        keeps them (each session names its transport)."""
        if (bad := bad_agent(agent_id)) is not None:
            return bad
        sessions = [
            {**session, "transport": transport.name}
            for transport in router.transports
            if isinstance(transport, KnowsSessions)
            for session in await transport.sessions(agent_id)
        ]
        return {"agentId": agent_id, "sessions": sessions}

    @app.get("/api/telemetry")
    async def telemetry_history() -> dict[str, Any] | Response:
        """Kept metrics and logs, oldest first, a page at a time (``next`` is ``after``
        for the following page)."""
        query = history_query(MAX_HISTORY_PAGE, HISTORY_KINDS)
        if isinstance(query, Response):
            return query
        items = await telemetry.history(
            after=query.after,
            limit=query.limit,
            agent_id=query.agent_id,
            kind=query.kind,
            since_ms=query.since_ms,
        )
        if items is None:
            message = "no enabled plugin keeps telemetry history (the websocket plugin does)"
            return error(404, "no_history", message)
        return {"items": items, "next": items[-1]["id"] if items else query.after}
