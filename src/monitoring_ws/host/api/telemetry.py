"""The telemetry read side, served by the host whatever the transport: an agent's recent
logs, its sessions, and the history a plugin keeps (docs/api.md, "Any transport"). The
dashboard reads these; the websocket plugin's ``/api/websocket/*`` routes stay for the
seed's callers."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, request

from ...protocol import AGENT_ID
from ...transports import KnowsSessions
from ...web import ID_RULE, error, forbidden, int_arg, reaches, token
from ..config import ServerSettings
from ..router import TransportRouter
from ..telemetry import HISTORY_KINDS, MAX_HISTORY_PAGE, TelemetryBus

__all__ = ["add_telemetry_routes"]


def _bad_agent(agent_id: str) -> Response | None:
    if AGENT_ID.fullmatch(agent_id):
        return None
    return error(400, "invalid_agent_id", f"agentId: {ID_RULE}")


def add_telemetry_routes(
    app: Quart, server: ServerSettings, router: TransportRouter, telemetry: TelemetryBus
) -> None:
    @app.get("/api/agents/<agent_id>/logs")
    async def agent_logs(agent_id: str) -> dict[str, Any] | Response:
        """The last log lines of the agent (the host's ring of ``log_ring`` lines)."""
        if (bad := _bad_agent(agent_id)) is not None:
            return bad
        ring = server.log_ring
        limit = int_arg("limit", 100)
        if limit is None or limit < 1:
            return error(400, "bad_request", f"limit must be a number from 1 (at most {ring} kept)")
        return {"agentId": agent_id, "entries": telemetry.recent_logs(agent_id, min(limit, ring))}

    @app.get("/api/agents/<agent_id>/sessions")
    async def agent_sessions(agent_id: str) -> dict[str, Any] | Response:
        """Its recent sessions on this node, newest first, from every transport that
        keeps them (each session names its transport)."""
        if (bad := _bad_agent(agent_id)) is not None:
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
        after, limit = int_arg("after", 0), int_arg("limit", 100)
        since = int_arg("since", 0)
        agent_id, kind = request.args.get("agentId"), request.args.get("type")
        if after is None or after < 0:
            return error(400, "bad_request", "after must be a non-negative row id")
        if limit is None or not 1 <= limit <= MAX_HISTORY_PAGE:
            return error(400, "bad_request", f"limit must be between 1 and {MAX_HISTORY_PAGE}")
        if since is None:
            return error(400, "bad_request", "since must be a time in ms since the epoch")
        if kind is not None and kind not in HISTORY_KINDS:
            return error(400, "bad_request", "type must be metrics or log")
        if agent_id is not None and (bad := _bad_agent(agent_id)) is not None:
            return bad
        presented = token()
        if (
            presented is not None
            and presented.agents
            and (agent_id is None or not reaches(agent_id))
        ):
            message = f"the token {presented.name} reaches some agents only: name one it reaches"
            return forbidden("agents", message)
        items = await telemetry.history(
            after=after, limit=limit, agent_id=agent_id, kind=kind, since_ms=since
        )
        if items is None:
            message = "no enabled plugin keeps telemetry history (the websocket plugin does)"
            return error(404, "no_history", message)
        return {"items": items, "next": items[-1]["id"] if items else after}
