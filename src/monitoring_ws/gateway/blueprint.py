"""``/api/websocket/*``: the seed's routes over this gateway (docs/api.md)."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Protocol

import trio
from quart import Blueprint, Response, request

from ..protocol.payloads import NAME
from ..transports import ShuttingDownError, TransportError, UnknownCommandError
from ..web import (
    ID_RULE,
    bad_agent,
    error,
    history_query,
    reach,
    reaches,
    recent_logs_answer,
    run_command_request,
    token,
    transport_error,
)
from .agent_config import agent_config

if TYPE_CHECKING:
    from ..host.command_service import CommandService
    from .config import GatewayConfig
    from .transport import WebSocketTransport
    from .view import GatewayView

__all__ = ["COMMANDS_PATH", "TelemetryRead", "websocket_blueprint"]

COMMANDS_PATH = "/api/websocket/commands"
MAX_TELEMETRY_PAGE = 1000
SPOOLED_TYPES = frozenset({"metrics", "log"})


class TelemetryRead(Protocol):
    """The host's read side of telemetry (``monitoring_ws.host.telemetry.TelemetryBus``)."""

    async def latest_metrics(self, agent_id: str) -> dict[str, Any] | None: ...

    def recent_logs(self, agent_id: str, limit: int | None = None) -> list[dict[str, Any]]: ...


def websocket_blueprint(
    transport: WebSocketTransport,
    gateway: GatewayView,
    telemetry: TelemetryRead,
    config: Callable[[], GatewayConfig],
    commands: Callable[[], CommandService | None],
    *,
    master_secret: Callable[[], bytes],
) -> Blueprint:
    """The routes; ``config`` gives the settings in force (they change on reload),
    ``commands`` the host's command service (None until the plugin runs),
    ``master_secret`` the secret agent configs derive keys from (it changes on reload)."""
    api = Blueprint("websocket", __name__, url_prefix="/api/websocket")

    @api.get("/agents")
    async def list_agents() -> dict[str, Any]:
        agents = await gateway.agents()
        allowed = reach()
        agents = [info for info in agents if allowed(info.agent_id)]
        return {"agents": [info.to_json() for info in agents], "count": len(agents)}

    @api.get("/agents/<agent_id>")
    async def agent_status(agent_id: str) -> dict[str, Any] | Response:
        if (bad := bad_agent(agent_id)) is not None:
            return bad
        info = await gateway.agent(agent_id)
        status = {"agentId": agent_id, "connected": False} if info is None else info.to_json()
        status["metrics"] = await telemetry.latest_metrics(agent_id)
        return status

    @api.get("/agents/<agent_id>/logs")
    async def agent_logs(agent_id: str) -> dict[str, Any] | Response:
        return recent_logs_answer(telemetry.recent_logs, agent_id, config().server.log_ring)

    @api.get("/agents/<agent_id>/connections")
    async def agent_connections(agent_id: str) -> dict[str, Any] | Response:
        if (bad := bad_agent(agent_id)) is not None:
            return bad
        # This node's, since it started: the last sessions of each agent.
        return {"agentId": agent_id, "sessions": gateway.sessions(agent_id)}

    @api.get("/agents/<agent_id>/config")
    async def agent_settings(agent_id: str) -> dict[str, Any] | Response:
        settings = config()
        # It hands out keys: only to a token (the guard checked its config:read scope).
        if token() is None:
            return error(403, "forbidden", "agent configs are served only when api_tokens are set")
        if (bad := bad_agent(agent_id)) is not None:
            return bad
        make = functools.partial(
            agent_config,
            settings.server,
            master_secret(),
            agent_id,
            public_host=request.args.get("publicHost"),
        )
        return await trio.to_thread.run_sync(make)

    @api.post("/agents/<agent_id>/command")
    async def send_command(agent_id: str) -> tuple[dict[str, Any], int] | Response:
        """The seed's route: the host's command service, through this transport only,
        answered in the seed's shape."""
        service = commands()
        if service is None:  # not yet running
            return error(503, ShuttingDownError.code, "the server is not serving commands yet")
        return await run_command_request(
            service, agent_id, via=transport.name, records_path=COMMANDS_PATH
        )

    @api.get("/commands/<command_id>")
    async def get_record(command_id: str) -> dict[str, Any] | Response:
        if not NAME.fullmatch(command_id):
            return error(400, "invalid_command_id", f"commandId: {ID_RULE}")
        record = await transport.command_record(command_id)
        if record is None or not reaches(record["agentId"]):
            return error(404, "unknown_command", f"no record of command {command_id}")
        return record

    @api.delete("/commands/<command_id>")
    async def cancel_record(command_id: str) -> dict[str, Any] | Response:
        if not NAME.fullmatch(command_id):
            return error(400, "invalid_command_id", f"commandId: {ID_RULE}")
        record = await transport.command_record(command_id)
        if record is None or not reaches(record["agentId"]):
            return error(404, "unknown_command", f"no record of command {command_id}")
        try:
            return await transport.cancel_command(command_id)
        except UnknownCommandError as exc:
            return error(404, exc.code, str(exc))
        except TransportError as exc:
            return transport_error(exc)

    _add_state_routes(api, gateway)
    return api


def _add_state_routes(api: Blueprint, gateway: GatewayView) -> None:
    """Counters and the telemetry spool."""

    @api.get("/stats")
    async def stats() -> dict[str, Any]:
        # counters: connections, authenticated, closed_<code>, refused_<code>, duplicates
        return gateway.state()

    @api.get("/telemetry")
    async def spooled() -> dict[str, Any] | Response:
        query = history_query(MAX_TELEMETRY_PAGE, SPOOLED_TYPES)
        if isinstance(query, Response):
            return query
        items = await gateway.telemetry(
            query.after, query.limit, query.agent_id, kind=query.kind, since_ms=query.since_ms
        )
        return {"items": items, "next": items[-1]["id"] if items else query.after}
