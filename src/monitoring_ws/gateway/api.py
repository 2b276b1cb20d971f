"""The HTTP API (Quart-Trio): agents, their status, and commands (docs/api.md)."""

from __future__ import annotations

import functools
import hashlib
import hmac
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint, Quart, Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException

from ..protocol import AGENT_ID
from ..transports import ShuttingDownError, Transport
from ..transports.router import TransportRouter
from ..transports.ssm import SSMTransport
from ..transports.websocket import WebSocketTransport
from .admission import client_address
from .agent_config import agent_config
from .guard import check_browser_rules, check_content_type
from .http import (
    MAX_BODY_BYTES,
    CommandRequest,
    accept_command,
    error,
    run_command_request,
)
from .neutral_api import add_neutral_routes
from .state_api import COMMAND_PATHS, add_state_routes

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .gateway import Gateway

__all__ = ["create_api"]


def create_api(
    gateway: Gateway,
    transports: Sequence[Transport] | None = None,
    blueprints: Sequence[Blueprint] = (),
) -> Quart:
    """The Quart-Trio app: /api/websocket/*, the neutral /api/agents over ``transports``
    (preference order; by default the gateway's own settings choose them), and other
    plugins' ``blueprints`` (behind the same bearer tokens)."""
    config = gateway.config
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = config.http_body_timeout_s  # a slow body is cut: 408
    transport = WebSocketTransport(gateway)
    if transports is None:
        available: dict[str, Transport] = {"websocket": transport}
        if config.ssm:
            available["ssm"] = SSMTransport(policy=config.ssm_policy())
        transports = [available[n] for n in config.transport_order if n in available]
    router = TransportRouter(transports)
    _add_guard(app, config)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        return error(exc.code or 500, code, exc.description or exc.name)

    @app.get("/api/websocket/agents")
    async def list_agents() -> dict[str, Any]:
        agents = sorted(await gateway.registry.list(), key=lambda info: info.agent_id)
        return {"agents": [info.to_json() for info in agents], "count": len(agents)}

    @app.get("/api/websocket/agents/<agent_id>")
    async def agent_status(agent_id: str) -> dict[str, Any] | Response:
        if not AGENT_ID.fullmatch(agent_id):
            return error(400, "invalid_agent_id", "agentId: 1-128 chars of [A-Za-z0-9._:-]")
        info = await gateway.registry.lookup(agent_id)
        status = {"agentId": agent_id, "connected": False} if info is None else info.to_json()
        status["metrics"] = gateway.memory_sink.latest_metrics(agent_id)
        return status

    @app.get("/api/websocket/agents/<agent_id>/logs")
    async def agent_logs(agent_id: str) -> dict[str, Any] | Response:
        limit = request.args.get("limit", default=100, type=int)
        if limit is None or not 1 <= limit <= config.log_ring:
            return error(400, "bad_request", f"limit must be between 1 and {config.log_ring}")
        return {"agentId": agent_id, "entries": gateway.memory_sink.recent_logs(agent_id, limit)}

    @app.get("/api/websocket/agents/<agent_id>/config")
    async def agent_settings(agent_id: str) -> dict[str, Any] | Response:
        # It hands out keys: only with API tokens configured (the guard checked one).
        if not config.api_tokens:
            return error(403, "forbidden", "agent configs are served only when api_tokens are set")
        if not AGENT_ID.fullmatch(agent_id):
            return error(400, "invalid_agent_id", "agentId: 1-128 chars of [A-Za-z0-9._:-]")
        make = functools.partial(
            agent_config,
            config,
            gateway.keyring.master_secrets[0],
            agent_id,
            public_host=request.args.get("publicHost"),
        )
        return await trio.to_thread.run_sync(make)

    @app.post("/api/websocket/agents/<agent_id>/command")
    async def send_command(agent_id: str) -> tuple[dict[str, Any], int] | Response:
        if gateway.shutting_down:
            return error(503, ShuttingDownError.code, "the server is shutting down")

        async def send(body: CommandRequest) -> dict[str, Any]:
            outcome = await transport.send_command(
                agent_id,
                body.command,
                body.args,
                body.timeout_ms / 1000,
            )
            return outcome.to_json()

        async def submit(body: CommandRequest) -> dict[str, Any]:
            return await accept_command(transport, agent_id, body, COMMAND_PATHS["websocket"])

        return await run_command_request(config, send, submit)

    add_state_routes(app, gateway)
    add_neutral_routes(app, gateway, router, transport)
    for blueprint in blueprints:
        app.register_blueprint(blueprint)
    return app


def _add_guard(app: Quart, config: GatewayConfig) -> None:
    """Every route, plugins' included: browser rules (403), the token (401), JSON (415)."""
    tokens = [token.encode() for token in config.api_tokens]
    # Records name the token a caller used by this, never by the token itself.
    fingerprints = [f"token:{hashlib.sha256(token).hexdigest()[:12]}" for token in tokens]
    proxies = config.proxy_networks()

    @app.before_request
    async def guard() -> Response | None:
        """Browser rules (403), then the token (401), then the body type (415)."""
        headers = {name.lower(): value for name, value in request.headers.items()}
        if proxies:  # who asked, as a trusted proxy says (records name it)
            g.address = client_address(
                request.remote_addr or "unknown", headers.get("x-forwarded-for"), proxies
            )
        refusal = check_browser_rules(
            headers, tokens_configured=bool(tokens), allowed_hosts=config.allowed_hosts
        )
        if refusal is None and tokens:
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            # Compare against every token: timing says nothing of which one nearly matched.
            matches = [hmac.compare_digest(presented.encode(), token) for token in tokens]
            if scheme.lower() != "bearer" or not any(matches):
                response = error(401, "unauthorized", "send Authorization: Bearer <api token>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="monitoring-ws"'
                return response
            g.credential = fingerprints[matches.index(True)]
        if refusal is None and request.routing_exception is None:  # else 404/405 first
            refusal = check_content_type(request.method, headers)
        if refusal is not None:
            return error(refusal.status, refusal.code, refusal.message)
        return None
