"""What the host's routes answer, as /openapi.json describes it (typed, for clients)."""

from __future__ import annotations

from typing import Any

from ...openapi import LOG_PAGE, TELEMETRY_PAGE

__all__ = ["HEALTH", "LOG_PAGE", "READY", "SESSION_PAGE", "SINKS", "TELEMETRY_PAGE", "TRANSPORTS"]

_INT: dict[str, Any] = {"type": "integer"}
_TEXT: dict[str, Any] = {"type": "string"}
SESSION_PAGE = {
    "type": "object",
    "required": ["agentId", "sessions"],
    "properties": {
        "agentId": _TEXT,
        "sessions": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["transport"],
                "properties": {"transport": _TEXT, "connectedAt": _INT},
            },
        },
    },
}
TRANSPORTS = {
    "type": "object",
    "required": ["transports"],
    "properties": {
        "transports": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name", "ok"],
                "properties": {"name": _TEXT, "ok": {"type": "boolean"}},
            },
        }
    },
}
SINKS = {
    "type": "object",
    "required": ["sinks"],
    "properties": {
        "sinks": {
            "type": "object",
            "additionalProperties": {
                "type": "object",
                "properties": {"queued": _INT, "delivered": _INT, "dropped": _INT, "failed": _INT},
            },
        }
    },
}
HEALTH = {"type": "object", "required": ["status"], "properties": {"status": _TEXT}}
READY = {
    "type": "object",
    "required": ["status", "checks"],
    "properties": {
        "status": {"type": "string", "enum": ["ready", "not_ready"]},
        "checks": {"type": "object", "additionalProperties": {"enum": ["ok", "failing"]}},
    },
}
