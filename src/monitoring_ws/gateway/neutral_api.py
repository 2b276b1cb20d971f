"""The transport-neutral API: /api/agents, whichever transport reaches the agent."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart, Response

from ..clock import wall_ms
from ..protocol import AGENT_ID
from ..transports import REQUESTER, CommandOutcome, Requester, TransportError
from ..transports.router import TransportRouter
from .http import CommandRequest, accept_command, error, run_command_request
from .state_api import COMMAND_PATHS

if TYPE_CHECKING:
    from ..transports.websocket import WebSocketTransport
    from .gateway import Gateway

__all__ = ["add_neutral_routes"]


def add_neutral_routes(
    app: Quart, gateway: Gateway, router: TransportRouter, websocket: WebSocketTransport
) -> None:
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
        def record(
            transport: str,
            body: CommandRequest,
            asked_by: Requester,
            started_ms: int,
            answer: CommandOutcome | TransportError,
        ) -> None:
            gateway.commands.record_elsewhere(
                transport,
                agent_id,
                body.command,
                body.args,
                body.timeout_ms,
                requested_by=asked_by,
                created_ms=started_ms,
                answer=answer,
            )

        async def send(body: CommandRequest) -> dict[str, Any]:
            asked_by, started = REQUESTER.get(), wall_ms()
            try:
                routed = await router.send_command(
                    agent_id,
                    body.command,
                    body.args,
                    body.timeout_ms / 1000,
                )
            except TransportError as exc:
                if exc.transport is not None and exc.transport != "websocket":
                    record(exc.transport, body, asked_by, started, exc)
                raise
            if routed.transport != "websocket":  # the WebSocket transport records its own
                record(routed.transport, body, asked_by, started, routed.outcome)
            return routed.to_json()

        async def submit(body: CommandRequest) -> dict[str, Any]:
            # Only a live WebSocket can take a command and answer later.
            return await accept_command(websocket, agent_id, body, COMMAND_PATHS["neutral"])

        return await run_command_request(config, send, submit)
