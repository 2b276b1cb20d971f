"""The ``/api/websocket/*`` routes in OpenAPI (beside blueprint.py; the host assembles
``/openapi.json``)."""

from __future__ import annotations

from typing import Any

from ..openapi import (
    ID_PATTERN,
    LOG_PAGE,
    TELEMETRY_PAGE,
    agent_param,
    command_param,
    json_body,
    operation,
    query,
    ref,
)

__all__ = ["websocket_paths"]

_TAG = "websocket"
_INT = {"type": "integer"}
_TEXT = {"type": "string"}
_MAYBE_INT = {"type": ["integer", "null"]}
#: An agent as the gateway knows it (``AgentInfo.to_json``).
_AGENT = {
    "type": "object",
    "required": ["agentId", "connected"],
    "properties": {
        "agentId": _TEXT,
        "connected": {"type": "boolean"},
        "sessionId": _TEXT,
        "hostname": _TEXT,
        "instanceId": {"type": ["string", "null"]},
        "agentVersion": _TEXT,
        "capabilities": {
            "type": "object",
            "properties": {
                "commands": {"type": "array", "items": _TEXT},
                "features": {"type": "array", "items": _TEXT},
            },
        },
        "remoteAddress": _TEXT,
        "connectedAt": _INT,
        "lastSeen": _INT,
        "node": _TEXT,
        "labels": {"type": "object", "additionalProperties": _TEXT},
        "metrics": {"type": ["object", "null"]},
    },
}
_AGENTS = {
    "type": "object",
    "required": ["agents", "count"],
    "properties": {"agents": {"type": "array", "items": _AGENT}, "count": _INT},
}
_SESSIONS = {
    "type": "object",
    "required": ["agentId", "sessions"],
    "properties": {
        "agentId": _TEXT,
        "sessions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["sessionId", "connectedAt"],
                "properties": {
                    "sessionId": _TEXT,
                    "address": _TEXT,
                    "node": _TEXT,
                    "connectedAt": _INT,
                    "disconnectedAt": _MAYBE_INT,
                    "closeCode": _MAYBE_INT,
                },
            },
        },
    },
}
_CONFIG = {
    "type": "object",
    "required": ["agentId", "wsApiUrl"],
    "properties": {"agentId": _TEXT, "wsApiUrl": _TEXT, "wsAgentKey": _TEXT, "wsSecret": _TEXT},
    "additionalProperties": True,
}
_STATS = {
    "type": "object",
    "required": ["openConnections", "commandsInFlight", "counters", "store"],
    "properties": {
        "openConnections": _INT,
        "commandsInFlight": _INT,
        "counters": {"type": "object", "additionalProperties": _INT},
        "deliveryDuplicates": _INT,
        "unmatchedResults": _INT,
        "store": {
            "type": "object",
            "properties": {"commits": _INT, "failedCommits": _INT, "pendingWrites": _INT},
        },
    },
}


def websocket_paths() -> dict[str, Any]:
    limit = {"type": "integer", "minimum": 1, "maximum": 10**18 - 1}
    return {
        "/api/websocket/agents": {
            "get": operation(
                "Agents connected over WebSocket (every node's)",
                _TAG,
                _AGENTS,
                op="listWebsocketAgents",
            )
        },
        "/api/websocket/agents/{agentId}": {
            "get": operation(
                "One agent's session and latest metrics",
                _TAG,
                _AGENT,
                errors=(400,),
                params=(agent_param(),),
                op="getWebsocketAgent",
            )
        },
        "/api/websocket/agents/{agentId}/logs": {
            "get": operation(
                "The agent's recent log lines",
                _TAG,
                LOG_PAGE,
                errors=(400,),
                params=(agent_param(), query("limit", limit, "how many")),
                op="getWebsocketAgentLogs",
            )
        },
        "/api/websocket/agents/{agentId}/connections": {
            "get": operation(
                "The agent's recent sessions on this node",
                _TAG,
                _SESSIONS,
                errors=(400,),
                params=(agent_param(),),
                op="listWebsocketAgentConnections",
            )
        },
        "/api/websocket/agents/{agentId}/config": {
            "get": operation(
                "A settings file for the agent (its key: scope config:read)",
                _TAG,
                _CONFIG,
                errors=(400, 403),
                params=(agent_param(), query("publicHost", {"type": "string"}, "what it dials")),
                op="getWebsocketAgentConfig",
            )
        },
        "/api/websocket/agents/{agentId}/command": {
            "post": operation(
                "Run a command over WebSocket (the seed's route)",
                _TAG,
                ref("CommandOutcome"),
                errors=(400, 403, 404, 413, 415, 502, 503, 504),
                params=(agent_param(),),
                body=json_body(ref("CommandRequest")),
                accepted=ref("Accepted"),
                op="sendWebsocketCommand",
            )
        },
        "/api/websocket/commands/{commandId}": {
            "get": operation(
                "A command's record",
                _TAG,
                ref("CommandRecord"),
                errors=(400, 404),
                params=(command_param(),),
                op="getWebsocketCommand",
            ),
            "delete": operation(
                "Cancel a command",
                _TAG,
                ref("CommandRecord"),
                errors=(400, 404, 409, 415),
                params=(command_param(),),
                op="cancelWebsocketCommand",
            ),
        },
        "/api/websocket/stats": {
            "get": operation("Counters of this node", _TAG, _STATS, op="getWebsocketStats")
        },
        "/api/websocket/telemetry": {
            "get": operation(
                "The telemetry spool, a page at a time",
                _TAG,
                TELEMETRY_PAGE,
                errors=(400, 403),
                params=(
                    query(
                        "after", {"type": "integer", "minimum": 0, "maximum": 10**18 - 1}, "row id"
                    ),
                    query("limit", {"type": "integer", "minimum": 1, "maximum": 1000}, "rows"),
                    query("agentId", {"type": "string", "pattern": ID_PATTERN}, "one agent's"),
                    query("type", {"type": "string", "enum": ["metrics", "log"]}, "one kind"),
                    query(
                        "since",
                        {"type": "integer", "minimum": 0, "maximum": 10**18 - 1},
                        "received at or after (ms)",
                    ),
                ),
                op="listWebsocketTelemetry",
            )
        },
    }
