"""Sessions, tunnels and recordings in ``/openapi.json``. OpenAPI cannot describe what a
WebSocket carries: the channel route is described as its upgrade (docs/api.md, "Sessions
and tunnels", says what flows after it)."""

from __future__ import annotations

from typing import Any

from ...openapi import agent_param, operation, query

__all__ = ["RECORDING", "channel_paths"]

_TEXT: dict[str, Any] = {"type": "string"}
_INT: dict[str, Any] = {"type": "integer"}
RECORDING: dict[str, Any] = {
    "type": "object",
    "required": ["id", "agentId", "startedAt"],
    "properties": {
        "id": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
        "agentId": _TEXT,
        "requestedBy": {"type": ["string", "null"]},
        "startedAt": _INT,
        "endedAt": _INT,
        "cols": _INT,
        "rows": _INT,
        "term": _TEXT,
        "bytesIn": _INT,
        "bytesOut": _INT,
        "exitCode": {"type": ["integer", "null"]},
        "reason": _TEXT,
        "size": _INT,
        "truncated": {"type": "boolean"},
    },
}


def channel_paths() -> dict[str, Any]:
    upgrade = operation(
        "Open a shell or a tunnel (a WebSocket upgrade: docs/api.md, 'Sessions and tunnels')",
        "sessions",
        None,
        errors=(400, 401, 403),
        params=(
            agent_param(),
            query("kind", {"type": "string", "enum": ["shell", "tunnel"]}, "what to open"),
            query("cols", {"type": "integer", "minimum": 1, "maximum": 1000}, "shell: columns"),
            query("rows", {"type": "integer", "minimum": 1, "maximum": 1000}, "shell: rows"),
            query("term", {"type": "string"}, "shell: TERM"),
            query("host", {"type": "string"}, "tunnel: the destination as the agent sees it"),
            query("port", {"type": "integer", "minimum": 1, "maximum": 65535}, "tunnel: port"),
        ),
        op="openChannel",
    )
    upgrade["responses"]["101"] = {"description": "switching to the WebSocket"}
    del upgrade["responses"]["200"]
    return {
        "/api/agents/{agentId}/channel": {"get": upgrade},
        "/api/recordings": {
            "get": operation(
                "Recorded shell sessions, newest first",
                "sessions",
                {
                    "type": "object",
                    "required": ["recordings"],
                    "properties": {"recordings": {"type": "array", "items": RECORDING}},
                },
                op="listRecordings",
            )
        },
        "/api/recordings/{recordingId}": {
            "get": operation(
                "A recording (asciicast v2)",
                "sessions",
                {"type": "string"},
                errors=(404,),
                params=(
                    {
                        "name": "recordingId",
                        "in": "path",
                        "required": True,
                        "schema": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                    },
                ),
                media="application/x-asciicast",
                op="getRecording",
            )
        },
    }
