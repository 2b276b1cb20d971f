"""The Quart-Trio app the host serves: its guard, its routes, and plugins' blueprints."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from quart import Quart, Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ...forwarded import client_address
from ...web import MAX_BODY_BYTES, error, forbidden, token
from ..audit import AuditLog
from ..command_service import CommandService
from ..config import ServerSettings
from ..events import EventHub
from ..metrics import CONTENT_TYPE, ServerMetrics
from ..plugins import Plugin
from ..telemetry import TelemetryBus
from ..tokens import ApiToken, TokenSet, required_scope
from .agents import add_agent_routes
from .events import add_event_routes
from .guard import check_browser_rules, check_content_type
from .health import HEALTH_PATHS, Readiness, add_health_routes
from .openapi import add_openapi_routes
from .ui import add_ui_routes, is_ui_path

__all__ = ["create_app", "install_guard"]


def create_app(
    server: ServerSettings,
    commands: CommandService,
    telemetry: TelemetryBus,
    *,
    plugins: Sequence[Plugin] = (),
    readiness: Readiness | None = None,
    metrics: ServerMetrics | None = None,
    audit: AuditLog | None = None,
    events: EventHub | None = None,
    tokens: TokenSet | None = None,
) -> Quart:
    """The API: the neutral routes over ``commands`` and every plugin's blueprints, all
    behind one guard (browser rules, bearer tokens, JSON bodies); ``/healthz`` and
    ``/readyz`` outside it."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = server.http_body_timeout_s  # a slow body is cut: 408
    tokens = TokenSet(server.api_tokens) if tokens is None else tokens
    install_guard(app, server, tokens)
    _audit_requests(app, AuditLog(None) if audit is None else audit)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        code = (exc.name or "error").lower().replace(" ", "_")
        response = error(exc.code or 500, code, exc.description or exc.name)
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:  # RFC 9110: say which
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    metrics = ServerMetrics() if metrics is None else metrics
    events = EventHub() if events is None else events
    add_agent_routes(app, commands, telemetry)
    add_event_routes(app, events, tokens)
    add_openapi_routes(app, lambda: plugins)
    add_ui_routes(app)

    @app.get("/metrics")
    async def prometheus() -> Response:
        """Prometheus exposition (behind the API's tokens; or open on ``metrics_listen``)."""
        presented = token()
        reaches = presented.reaches if presented is not None and presented.agents else None
        exposition = metrics.exposition(reaches)
        return Response(exposition, content_type=CONTENT_TYPE)

    add_health_routes(app, readiness or Readiness(listening=True), lambda: plugins)

    @app.get("/api/telemetry/sinks")
    async def sinks() -> dict[str, Any]:
        """Per registered sink: queued, delivered, dropped (queue full), failed."""
        return {"sinks": telemetry.stats()}

    for plugin in plugins:
        for blueprint in plugin.blueprints():
            app.register_blueprint(blueprint)
    return app


def install_guard(app: Quart, server: ServerSettings, tokens: TokenSet) -> None:
    """Every route, plugins' included: browser rules (403), the token (401), JSON (415)."""
    proxies = server.proxy_networks()

    @app.before_request
    async def guard() -> Response | None:
        if request.path in HEALTH_PATHS:  # probes: no token, nothing to protect
            return None
        headers = {name.lower(): value for name, value in request.headers.items()}
        if proxies:  # who asked, as a trusted proxy says (records name it)
            g.address = client_address(
                request.remote_addr or "unknown", headers.get("x-forwarded-for"), proxies
            )
        refusal = check_browser_rules(
            headers, tokens_configured=bool(tokens), allowed_hosts=server.allowed_hosts
        )
        # The dashboard's files hold no data: no token (the page asks for it), same rules.
        if refusal is None and tokens and not is_ui_path(request.path):
            scheme, _, presented = request.headers.get("Authorization", "").partition(" ")
            found = tokens.find(presented) if scheme.lower() == "bearer" else None
            if found is None:
                response = error(401, "unauthorized", "send Authorization: Bearer <api token>")
                response.headers["WWW-Authenticate"] = 'Bearer realm="monitoring-ws"'
                return response
            # Records name the token by its name (a fingerprint for plain ones), never itself.
            g.token, g.credential = found, found.credential
            if request.routing_exception is None:  # else 404/405 first
                scoped = _scope_refusal(found)
                if scoped is not None:
                    return scoped
        if refusal is None and request.routing_exception is None:  # else 404/405 first
            refusal = check_content_type(request.method, headers)
        if refusal is not None:
            return error(refusal.status, refusal.code, refusal.message)
        return None


def _scope_refusal(token: ApiToken) -> Response | None:
    """403 when the token lacks the route's scope, or the agent in its path."""
    rule = request.url_rule.rule if request.url_rule is not None else None
    missing = token.lacks(required_scope(request.method, rule))
    if missing is not None:
        return forbidden(missing, f"the token {token.name} lacks the scope {missing}")
    agent_id = (request.view_args or {}).get("agent_id")
    if isinstance(agent_id, str) and not token.reaches(agent_id):
        return forbidden("agents", f"the token {token.name} does not reach agent {agent_id}")
    return None


def _audit_requests(app: Quart, audit: AuditLog) -> None:
    """Every request that changes something, and every refused one, in the audit log."""

    @app.after_request
    async def audited(response: Response) -> Response:
        if request.path in HEALTH_PATHS:
            return response
        refused = response.status_code in {401, 403}
        if request.method in {"GET", "HEAD"} and not refused:
            return response
        token = g.get("token")
        fields = {
            "method": request.method,
            "path": request.path[:512],
            "status": response.status_code,
            "address": g.get("address") or request.remote_addr,
            "token": None if token is None else token.name,
            "agentId": (request.view_args or {}).get("agent_id"),
            **g.get("audit", {}),
        }
        # Anyone can make refusals: they are rate-limited (the rest counted).
        (audit.noisy if refused else audit.record)("refused" if refused else "request", **fields)
        return response
