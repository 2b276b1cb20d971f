"""``/openapi.json`` (OpenAPI 3.1) and ``/docs``: the host's routes described here, each
plugin's by its ``openapi_paths()``; tests/test_openapi.py checks the description against
the app's routes and runs schemathesis against a real server."""

from __future__ import annotations

import html
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from quart import Quart, Response

from ... import __version__
from ...openapi import (
    COMMAND_SCHEMAS,
    ID_PATTERN,
    agent_param,
    command_param,
    json_body,
    operation,
    query,
    ref,
)
from ..plugins import Plugin
from .openapi_channels import channel_paths
from .openapi_jobs import JOB_SCHEMAS, SELECTOR_PATTERN, job_paths
from .openapi_responses import (
    HEALTH,
    LOG_PAGE,
    READY,
    SESSION_PAGE,
    SINKS,
    TELEMETRY_PAGE,
    TRANSPORTS,
)
from .output import OUTPUT_LINE, OUTPUT_TYPE

__all__ = ["SCHEMAS", "add_openapi_routes", "openapi_document"]

_ANY: dict[str, Any] = {"type": "object", "additionalProperties": True}
_MS = {"type": "integer", "minimum": 0, "maximum": 10**16 - 1}
_CURSOR = "^[0-9]{1,16}~" + ID_PATTERN.removeprefix("^")
_ID = {"type": "string", "pattern": ID_PATTERN}
#: What ``int_arg`` reads: up to 18 digits.
_ROW = {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}
_STATES = ["queued", "sent", "succeeded", "failed", "timed_out", "cancelled", "agent_disconnected"]

SCHEMAS: dict[str, Any] = {
    "Error": {
        "type": "object",
        "required": ["error"],
        "properties": {
            "error": {
                "type": "object",
                "required": ["code", "message"],
                "properties": {"code": {"type": "string"}, "message": {"type": "string"}},
            }
        },
    },
    **COMMAND_SCHEMAS,
    **JOB_SCHEMAS,
    "CommandOutcome": {
        "type": "object",
        "required": ["commandId", "ok", "durationMs"],
        "properties": {
            "commandId": {"type": "string"},
            "ok": {"type": "boolean"},
            "durationMs": {"type": "integer"},
            "result": {},
            "error": {"type": "object"},
            "transport": {"type": "string"},
        },
    },
    "Accepted": {
        "type": "object",
        "required": ["commandId", "state", "location"],
        "properties": {
            "commandId": {"type": "string"},
            "state": {"type": "string"},
            "location": {"type": "string"},
        },
    },
    "CommandRecord": {
        "type": "object",
        "required": ["commandId", "agentId", "command", "state", "transport", "createdAt"],
        "properties": {
            "commandId": {"type": "string"},
            "agentId": {"type": "string"},
            "command": {"type": "string"},
            "args": {"type": "object"},
            "state": {"type": "string", "enum": _STATES},
            "transport": {"type": "string"},
            "createdAt": {"type": "integer"},
            "requestedBy": {"type": "object"},
        },
    },
    "Agent": {
        "type": "object",
        "required": ["agentId", "connected"],
        "properties": {
            "agentId": {"type": "string"},
            "connected": {"type": "boolean"},
            "lastSeen": {"type": ["integer", "null"]},
            "transports": {"type": "object"},
            "details": {"type": "object"},
            "metrics": {"type": ["object", "null"]},
            "labels": ref("Labels"),
            "agentLabels": ref("Labels"),
            "operatorLabels": ref("Labels"),
        },
    },
}


def _host_paths() -> dict[str, Any]:
    send = operation(
        "Run a command on an agent through the first transport that reaches it",
        "agents",
        ref("CommandOutcome"),
        errors=(400, 403, 404, 409, 413, 415, 502, 503, 504),
        params=(agent_param(),),
        body=json_body(ref("CommandRequest")),
        accepted=ref("Accepted"),
        op="sendCommand",
    )
    history_params = (
        query("agentId", _ID, "only this agent's"),
        query("command", _ID, "only this command's"),
        query("state", {"type": "string", "enum": _STATES}, "only records in this state"),
        query("since", _MS, "createdAt at or after (ms)"),
        query("until", _MS, "createdAt at or before (ms)"),
        query("requestedBy", {"type": "string", "minLength": 1, "maxLength": 128}, "who asked"),
        query("limit", {"type": "integer", "minimum": 1, "maximum": 500}, "page size"),
        query("cursor", {"type": "string", "pattern": _CURSOR}, "the previous page's next"),
    )
    page = {
        "type": "object",
        "required": ["commands", "next"],
        "properties": {
            "commands": {"type": "array", "items": ref("CommandRecord")},
            "next": {"type": ["string", "null"]},
        },
    }
    listing = {
        "type": "object",
        "required": ["agents", "count", "transports"],
        "properties": {
            "agents": {"type": "array", "items": ref("Agent")},
            "count": {"type": "integer"},
        },
    }
    return {
        "/api/agents": {
            "get": operation(
                "Every transport's agents",
                "agents",
                listing,
                errors=(400,),
                params=(
                    query(
                        "metrics",
                        {"type": "string", "enum": ["summary"]},
                        "add each agent's latest CPU, memory, disk and load",
                    ),
                    query(
                        "selector",
                        {"type": "string", "maxLength": 4096, "pattern": SELECTOR_PATTERN},
                        "only the agents a selector matches: a label selector (the "
                        "object form of docs/api.md is taken too, as JSON)",
                    ),
                ),
                op="listAgents",
            )
        },
        "/api/agents/{agentId}": {
            "get": operation(
                "One agent",
                "agents",
                ref("Agent"),
                errors=(400,),
                params=(agent_param(),),
                op="getAgent",
            )
        },
        "/api/agents/{agentId}/commands": {"post": send},
        "/api/agents/{agentId}/logs": {
            "get": operation(
                "The agent's last log lines (the host's ring)",
                "agents",
                LOG_PAGE,
                errors=(400,),
                params=(
                    agent_param(),
                    query("limit", {**_ROW, "minimum": 1}, "lines (at most log_ring kept)"),
                ),
                op="getAgentLogs",
            )
        },
        "/api/agents/{agentId}/sessions": {
            "get": operation(
                "The agent's recent sessions on this node, every transport's",
                "agents",
                SESSION_PAGE,
                errors=(400,),
                params=(agent_param(),),
                op="listAgentSessions",
            )
        },
        "/api/telemetry": {
            "get": operation(
                "Kept metrics and logs, a page at a time",
                "agents",
                TELEMETRY_PAGE,
                errors=(400, 403, 404),
                params=(
                    query("after", _ROW, "row id"),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "rows"),
                    query("agentId", _ID, "one agent's"),
                    query("type", {"type": "string", "enum": ["metrics", "log"]}, "one kind"),
                    query("since", _ROW, "received at or after (ms)"),
                ),
                op="listTelemetry",
            )
        },
        "/api/commands": {
            "get": operation(
                "Command history, newest first",
                "commands",
                page,
                errors=(400,),
                params=history_params,
                op="listCommands",
            )
        },
        "/api/commands/{commandId}": {
            "get": operation(
                "A command's record",
                "commands",
                ref("CommandRecord"),
                errors=(400, 404),
                params=(command_param(),),
                op="getCommand",
            ),
            "delete": operation(
                "Cancel a command",
                "commands",
                ref("CommandRecord"),
                errors=(400, 404, 409, 415),
                params=(command_param(),),
                op="cancelCommand",
            ),
        },
        "/api/commands/{commandId}/output": {
            "get": operation(
                "A command's output as NDJSON lines (follow: as it comes, until it ends)",
                "commands",
                OUTPUT_LINE,
                errors=(400, 404),
                params=(
                    command_param(),
                    query("after", {"type": "string", "pattern": "^[0-9]{1,16}$"}, "last seq read"),
                    query("follow", {"type": "string", "enum": ["true", "false"]}, "wait for more"),
                ),
                media=OUTPUT_TYPE,
                op="getCommandOutput",
            )
        },
        "/api/transports": {
            "get": operation("Each transport's health", "server", TRANSPORTS, op="listTransports")
        },
        "/api/telemetry/sinks": {
            "get": operation("Telemetry sinks' counters", "server", SINKS, op="listTelemetrySinks")
        },
        "/api/events": {
            "get": operation(
                "Live events (server-sent events)",
                "events",
                {"type": "string"},
                errors=(400,),
                params=(
                    query("type", {"type": "string"}, "comma-separated event types"),
                    query("agentId", _ID, "only this agent's"),
                    query(
                        "metrics",
                        {"type": "string", "enum": ["summary"]},
                        "metrics events carry a summary instead of the sample",
                    ),
                ),
                media="text/event-stream",
                op="streamEvents",
            )
        },
        "/metrics": {
            "get": operation(
                "Prometheus metrics",
                "server",
                {"type": "string"},
                media="text/plain",
                op="getMetrics",
            )
        },
        "/healthz": {"get": operation("Alive", "server", HEALTH, op="getHealthz")},
        "/readyz": {
            "get": operation("Ready (503 when not)", "server", READY, errors=(), op="getReadyz")
        },
        "/openapi.json": {"get": operation("This description", "server", _ANY, op="getOpenapi")},
        "/docs": {
            "get": operation(
                "This description as a page",
                "server",
                {"type": "string"},
                media="text/html",
                op="getDocsPage",
            )
        },
        "/ui": {
            "get": operation(
                "The dashboard", "ui", {"type": "string"}, media="text/html", op="getDashboard"
            )
        },
        "/ui/{name}": {
            "get": operation(
                "The dashboard's files",
                "ui",
                {"type": "string"},
                errors=(404,),
                params=(
                    {
                        "name": "name",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[a-z0-9-]+[.](js|css|html)$"},
                    },
                ),
                media="text/plain",
                op="getDashboardFile",
            )
        },
    }


def openapi_document(plugins: Sequence[Plugin]) -> dict[str, Any]:
    paths = _host_paths() | job_paths() | channel_paths()
    for plugin in plugins:
        paths.update(plugin.openapi_paths())
    readyz = paths["/readyz"]["get"]["responses"]
    readyz["503"] = {
        "description": "not ready",
        "content": {"application/json": {"schema": READY}},
    }
    for probe in ("/healthz", "/readyz"):  # no token, ever
        paths[probe]["get"]["security"] = []
    for path, methods in paths.items():
        for method, described in methods.items():
            described.setdefault("operationId", _operation_id(method, path))
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "monitoring-ws",
            "version": __version__,
            "description": "The monitoring module's API (docs/api.md). With API tokens "
            "configured every route but /healthz and /readyz needs `Authorization: Bearer`.",
        },
        "components": {
            "schemas": SCHEMAS,
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        },
        "security": [{}, {"bearer": []}],
        "paths": dict(sorted(paths.items())),
    }


def _operation_id(method: str, path: str) -> str:
    """For a plugin's operation that names none: ``get /api/things/{id}`` is
    ``getApiThingsId``."""
    words = [w for w in path.replace("{", "/").replace("}", "").split("/") if w]
    return method + "".join(w[:1].upper() + w[1:] for w in words)


def add_openapi_routes(app: Quart, plugins: Callable[[], Sequence[Plugin]]) -> None:
    @app.get("/openapi.json")
    async def described() -> Mapping[str, Any]:
        return openapi_document(plugins())

    @app.get("/docs")
    async def page() -> Response:
        document = openapi_document(plugins())
        rows = [
            f"<tr><td>{method.upper()}</td><td><code>{html.escape(path)}</code></td>"
            f"<td>{html.escape(item['summary'])}</td></tr>"
            for path, methods in document["paths"].items()
            for method, item in methods.items()
        ]
        body = (
            "<!doctype html><html><head><meta charset='utf-8'><title>monitoring-ws API</title>"
            "</head><body><h1>monitoring-ws API</h1><p>The full description: "
            "<a href='/openapi.json'>/openapi.json</a>; docs/api.md explains each route.</p>"
            "<table><tr><th>method</th><th>path</th><th>what</th></tr>"
            + "".join(rows)
            + "</table></body></html>"
        )
        response = Response(body, mimetype="text/html")
        response.headers["Content-Security-Policy"] = "default-src 'none'"
        return response
