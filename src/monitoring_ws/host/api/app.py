"""The Quart-Trio app the host serves: its guard, its routes, and plugins' blueprints."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from quart import Quart, Response, g, request
from quart_trio import QuartTrio
from werkzeug.exceptions import HTTPException, MethodNotAllowed

from ...transports import KeepsOutput
from ...transports.channels import OpensChannels
from ...web import MAX_BODY_BYTES, error, http_error_body, token
from ..audit import AuditLog
from ..command_service import CommandService
from ..config import ServerSettings
from ..events import EventHub
from ..fleet import Fleet
from ..jobs import JobRunner
from ..labels import LabelStore
from ..metrics import CONTENT_TYPE, ServerMetrics
from ..plugins import Plugin
from ..recordings import Recordings
from ..telemetry import TelemetryBus
from ..tokens import TokenSet
from .agents import add_agent_routes, record_finder
from .channels import add_channel_routes
from .events import add_event_routes
from .gate import Refused, admit, audit_request
from .health import HEALTH_PATHS, Readiness, add_health_routes
from .jobs import add_job_routes
from .openapi import add_openapi_routes
from .output import add_output_routes
from .telemetry import add_telemetry_routes
from .ui import add_ui_routes

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
    fleet: Fleet | None = None,
    jobs: JobRunner | None = None,
) -> Quart:
    """The API: the neutral routes over ``commands`` and every plugin's blueprints, all
    behind one guard (browser rules, bearer tokens, JSON bodies); ``/healthz`` and
    ``/readyz`` outside it."""
    app = QuartTrio(__name__)
    app.config["MAX_CONTENT_LENGTH"] = MAX_BODY_BYTES
    app.config["BODY_TIMEOUT"] = server.http_body_timeout_s  # a slow body is cut: 408
    tokens = TokenSet(server.api_tokens) if tokens is None else tokens
    install_guard(app, server, tokens)
    audit = AuditLog(None) if audit is None else audit
    _audit_requests(app, audit)

    @app.errorhandler(HTTPException)
    async def http_error(exc: HTTPException) -> Response:
        body = json.dumps(http_error_body(exc))
        response = Response(body, status=exc.code or 500, mimetype="application/json")
        if isinstance(exc, MethodNotAllowed) and exc.valid_methods:  # RFC 9110: say which
            response.headers["Allow"] = ", ".join(sorted(exc.valid_methods))
        return response

    metrics = ServerMetrics() if metrics is None else metrics
    events = EventHub() if events is None else events
    fleet = Fleet(commands.router, LabelStore(None)) if fleet is None else fleet
    add_agent_routes(app, commands, telemetry, fleet)
    if jobs is not None:
        add_job_routes(app, jobs)
    streaming = [t for t in commands.keepers if isinstance(t, KeepsOutput)]
    add_output_routes(app, streaming, record_finder(commands.log, commands.keepers), jobs)
    add_telemetry_routes(app, server, commands.router, telemetry)
    add_event_routes(app, events, tokens)
    recordings = Recordings(
        server.state_dir / "recordings",
        max_bytes=server.recordings_max_bytes,
        max_bytes_each=server.recording_max_bytes,
    )
    transports = commands.router.transports
    openers = lambda: [t for t in transports if isinstance(t, OpensChannels)]  # noqa: E731
    add_channel_routes(app, server, tokens, openers, recordings=recordings, audit=audit)
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
        routed = request.routing_exception is None and request.url_rule is not None
        agent_id = (request.view_args or {}).get("agent_id")
        verdict = admit(
            server,
            tokens,
            proxies,
            method=request.method,
            path=request.path,
            headers={name.lower(): value for name, value in request.headers.items()},
            authorization=request.headers.get("Authorization", ""),
            peer=request.remote_addr or "unknown",
            rule=request.url_rule.rule if routed and request.url_rule is not None else None,
            agent_id=agent_id if isinstance(agent_id, str) else None,
        )
        if verdict.address is not None:  # who asked, as a trusted proxy says
            g.address = verdict.address
        if verdict.token is not None:  # records name it by its name, never itself
            g.token, g.credential = verdict.token, verdict.token.credential
        if isinstance(verdict, Refused):
            response = error(verdict.status, verdict.code, verdict.message, **verdict.extra)
            for name, value in verdict.headers:
                response.headers[name] = value
            return response
        return None


def _audit_requests(app: Quart, audit: AuditLog) -> None:
    """Every request that changes something, and every refused one, in the audit log."""

    @app.after_request
    async def audited(response: Response) -> Response:
        if request.path not in HEALTH_PATHS:
            agent_id = (request.view_args or {}).get("agent_id")
            audit_request(
                audit,
                method=request.method,
                path=request.path,
                status=response.status_code,
                address=g.get("address") or request.remote_addr,
                token=g.get("token"),
                agent_id=agent_id if isinstance(agent_id, str) else None,
                more=g.get("audit", {}),
            )
        return response
