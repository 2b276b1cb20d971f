"""The transport-neutral API: /api/agents, whichever transport reaches the agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart, Response, request

from ..protocol import AGENT_ID
from ..transports.router import TransportRouter
from .http import error, run_command_request

if TYPE_CHECKING:
    from .gateway import Gateway

__all__ = ["add_neutral_routes"]


def add_neutral_routes(app: Quart, gateway: Gateway, router: TransportRouter) -> None:
    config = gateway.config

    @app.get("/api/agents")
    async def neutral_list_agents() -> dict[str, Any]:
        agents = sorted(await gateway.registry.list(), key=lambda info: info.agent_id)
        listed = [
            {"agentId": info.agent_id, "transports": await router.reachability(info.agent_id)}
            for info in agents
        ]
        return {
            "agents": listed,
            "count": len(listed),
            "transports": [t.name for t in router.transports],
        }

    @app.get("/api/transports")
    async def neutral_transports() -> dict[str, Any]:
        return {"transports": [{"name": t.name, **t.health()} for t in router.transports]}

    @app.get("/api/agents/<agent_id>")
    async def neutral_agent(agent_id: str) -> dict[str, Any] | Response:
        if not AGENT_ID.fullmatch(agent_id):
            return error(400, "invalid_agent_id", "agentId: 1-128 chars of [A-Za-z0-9._:-]")
        info = await gateway.registry.lookup(agent_id)
        return {
            "agentId": agent_id,
            "transports": await router.reachability(agent_id),
            "websocket": None if info is None else info.to_json(),
        }

    @app.post("/api/agents/<agent_id>/commands")
    async def neutral_send(agent_id: str) -> tuple[dict[str, Any], int] | Response:
        async def send(command: str, args: dict[str, Any], timeout_s: float) -> dict[str, Any]:
            routed = await router.send_command(agent_id, command, args, timeout_s)
            return routed.to_json()

        return await run_command_request(
            await request.get_data(),
            config.default_command_timeout_ms,
            config.max_command_timeout_ms,
            send,
        )
