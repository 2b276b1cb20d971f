"""Pieces of the OpenAPI 3.1 description that the host's and the plugins' route modules
use to describe their routes beside them (``/openapi.json``, docs/api.md)."""

from __future__ import annotations

from typing import Any

__all__ = [
    "COMMAND_SCHEMAS",
    "ERROR",
    "ID_PATTERN",
    "LOG_PAGE",
    "TELEMETRY_PAGE",
    "agent_param",
    "command_param",
    "json_body",
    "operation",
    "query",
    "ref",
]

#: agentId and commandId in a path: what ``protocol.AGENT_ID`` and ``NAME`` accept (the
#: look-ahead, not ``$``, ends it: ``$`` would let a trailing newline through).
ID_PATTERN = "^[A-Za-z0-9][A-Za-z0-9._:-]{0,127}(?![\\s\\S])"
_WHY = {
    200: "OK",
    202: "accepted: the record follows the command",
    400: "bad request: the message says what",
    401: "no or a wrong API token",
    403: "refused: a browser rule or a missing scope",
    404: "no such agent, command or route",
    409: "the record says no (it ended, or another node runs it)",
    413: "too large",
    415: "a write without Content-Type: application/json",
    429: "too many at once: retry later",
    502: "the agent went away before it answered",
    503: "shutting down, or the state database or Redis cannot be used",
    504: "no answer within timeoutMs",
}


def ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


ERROR = ref("Error")


def _json(schema: dict[str, Any]) -> dict[str, Any]:
    return {"application/json": {"schema": schema}}


def json_body(schema: dict[str, Any]) -> dict[str, Any]:
    return {"required": True, "content": _json(schema)}


def _param(name: str, where: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return {
        "name": name,
        "in": where,
        "required": where == "path",
        "schema": schema,
        "description": text,
    }


def agent_param() -> dict[str, Any]:
    return _param("agentId", "path", {"type": "string", "pattern": ID_PATTERN}, "the agent")


def command_param() -> dict[str, Any]:
    return _param("commandId", "path", {"type": "string", "pattern": ID_PATTERN}, "the command")


def query(name: str, schema: dict[str, Any], text: str) -> dict[str, Any]:
    return _param(name, "query", schema, text)


def operation(
    summary: str,
    tag: str,
    ok: dict[str, Any] | None,
    *,
    op: str | None = None,
    errors: tuple[int, ...] = (),
    params: tuple[dict[str, Any], ...] = (),
    body: dict[str, Any] | None = None,
    accepted: dict[str, Any] | None = None,
    media: str = "application/json",
) -> dict[str, Any]:
    """One operation: its success (``ok``: a schema; None for no JSON body), the error
    statuses it documents (each with the ``Error`` body; ``default`` covers the rest), and
    ``op``, the ``operationId`` clients call it by (one the plugin leaves out is made from
    the method and path)."""
    responses: dict[str, Any] = {
        "200": {"description": _WHY[200]}
        | ({} if ok is None else {"content": {media: {"schema": ok}}})
    }
    if accepted is not None:
        responses["202"] = {"description": _WHY[202], "content": _json(accepted)}
    for status in errors:
        responses[str(status)] = {"description": _WHY[status], "content": _json(ERROR)}
    responses["default"] = {"description": "an error", "content": _json(ERROR)}
    described: dict[str, Any] = {"summary": summary, "tags": [tag], "responses": responses}
    if op is not None:
        described["operationId"] = op
    if params:
        described["parameters"] = list(params)
    if body is not None:
        described["requestBody"] = body
    return described


#: A command request's body as /openapi.json describes it. ``monitoring_ws.web.command_body``
#: checks the same rules by hand (with the strict JSON reader); tests/test_properties.py
#: proves the two accept the same bodies.
COMMAND_SCHEMAS: dict[str, Any] = {
    "JsonValue": {
        "description": "JSON the protocol can sign: integers written without a fraction or "
        "exponent within +-(2**53 - 1) (other finite numbers as they are), nesting at most "
        "64 deep, no lone surrogates, no duplicate keys",
        "anyOf": [
            {"type": "null"},
            {"type": "boolean"},
            {"type": "string"},
            {"type": "number"},
            {"type": "array", "items": ref("JsonValue")},
            {"type": "object", "additionalProperties": ref("JsonValue")},
        ],
    },
    "CommandRequest": {
        "type": "object",
        "required": ["command"],
        "additionalProperties": False,
        "properties": {
            "command": {"type": "string", "pattern": ID_PATTERN},
            "args": {"type": "object", "additionalProperties": ref("JsonValue")},
            "timeoutMs": {
                "type": "integer",
                "minimum": 1,
                "maximum": 3_600_000,
                "description": "at most the server's max_command_timeout_ms (this by default)",
            },
            "wait": {"type": "boolean"},
            "requestedBy": {"type": "string", "minLength": 1, "maxLength": 128},
            "streamOutput": {
                "type": "boolean",
                "description": "output as it happens: GET /api/commands/{commandId}/output",
            },
            "intent": ref("SignedIntent"),
        },
    },
    "SignedIntent": {
        "type": "object",
        "description": "an operator's signed intent, relayed unchanged to the agents it names "
        "(docs/protocol.md, 11.7). 409 intent_rejected when it does not fit the body "
        "(another command or args) or cannot be checked (its window, its encoding)",
        "required": ["intent", "signatures"],
        "additionalProperties": False,
        "properties": {
            "intent": {
                "type": "object",
                "required": ["v", "command", "args", "agents", "notBefore", "expires", "nonce"],
                "additionalProperties": False,
                "properties": {
                    "v": {"type": "integer", "enum": [1]},
                    "command": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,64}$"},
                    "args": {"type": "object", "additionalProperties": ref("JsonValue")},
                    "agents": {
                        "type": "array",
                        "minItems": 1,
                        "maxItems": 5000,
                        "items": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                    },
                    "selector": {"type": "string", "maxLength": 4096},
                    # Milliseconds, and JSON integers the strict reader takes (2**53 - 1).
                    "notBefore": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1},
                    "expires": {"type": "integer", "minimum": 0, "maximum": 2**53 - 1},
                    "nonce": {"type": "string", "pattern": "^[A-Za-z0-9_-]{16,64}$"},
                },
            },
            "signatures": {
                "type": "array",
                "minItems": 1,
                "maxItems": 16,
                "items": {
                    "type": "object",
                    "required": ["keyId", "signature"],
                    "additionalProperties": False,
                    "properties": {
                        "keyId": {"type": "string", "pattern": "^[0-9a-f]{16}$"},
                        "signature": {"type": "string"},
                    },
                },
            },
        },
    },
}


_INT: dict[str, Any] = {"type": "integer"}
_TEXT: dict[str, Any] = {"type": "string"}
#: ``GET .../agents/:id/logs``: an agent's last log lines (the host's and the plugin's).
LOG_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["agentId", "entries"],
    "properties": {
        "agentId": _TEXT,
        "entries": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"ts": _INT, "level": _TEXT, "message": _TEXT, "source": _TEXT},
            },
        },
    },
}
#: A page of kept telemetry (``GET /api/telemetry``, the websocket plugin's spool).
TELEMETRY_PAGE: dict[str, Any] = {
    "type": "object",
    "required": ["items", "next"],
    "properties": {
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["id", "agentId", "type", "receivedAt", "envelope"],
                "properties": {
                    "id": _INT,
                    "agentId": _TEXT,
                    "type": {"type": "string", "enum": ["metrics", "log"]},
                    "receivedAt": _INT,
                    "envelope": {"type": "object"},
                },
            },
        },
        "next": _INT,
    },
}
