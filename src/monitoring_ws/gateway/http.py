"""What the HTTP routes share: JSON errors, the status of each failure, the command body."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any

from quart import Response

from ..protocol.payloads import NAME
from ..transports import (
    AgentGoneError,
    AgentNotConnectedError,
    CommandNotSupportedError,
    CommandTimeoutError,
    ShuttingDownError,
    TransportError,
)

__all__ = [
    "MAX_BODY_BYTES",
    "STATUS",
    "BadBody",
    "command_body",
    "error",
    "run_command_request",
    "transport_error",
]

#: HTTP status of each transport failure (docs/api.md, "Errors").
STATUS = {
    AgentNotConnectedError: 404,
    CommandNotSupportedError: 400,
    CommandTimeoutError: 504,
    AgentGoneError: 502,
    ShuttingDownError: 503,
}
MAX_BODY_BYTES = 1 << 20


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return Response(json.dumps(body), status=status, mimetype="application/json")


class BadBody(ValueError):
    """A request body the API refuses; the message says what is wrong."""


def command_body(raw: str | bytes, default_ms: int, max_ms: int) -> tuple[str, dict[str, Any], int]:
    try:
        body = json.loads(raw)
    except (ValueError, RecursionError):
        raise BadBody("the body is not JSON") from None
    if not isinstance(body, dict):
        raise BadBody('the body must be a JSON object: {"command": "ping", "args": {}}')
    command = body.get("command")
    if not isinstance(command, str) or not NAME.fullmatch(command):
        raise BadBody('"command" must be a command name such as "ping"')
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise BadBody('"args" must be a JSON object')
    timeout_ms = body.get("timeoutMs", default_ms)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise BadBody('"timeoutMs" must be an integer number of milliseconds')
    if not 1 <= timeout_ms <= max_ms:
        raise BadBody(f'"timeoutMs" must be between 1 and {max_ms}')
    return command, args, timeout_ms


def transport_error(exc: TransportError) -> Response:
    """The documented status and JSON error of a transport failure."""
    command_id = getattr(exc, "command_id", None)
    extra = {} if command_id is None else {"commandId": command_id}
    return error(STATUS.get(type(exc), 500), exc.code, str(exc), **extra)


Send = Callable[[str, dict[str, Any], float], Awaitable[dict[str, Any]]]


async def run_command_request(
    raw_body: str | bytes, default_ms: int, max_ms: int, send: Send
) -> tuple[dict[str, Any], int] | Response:
    """A command route's whole answer: parse the body, ``send``, map failures to statuses."""
    try:
        command, args, timeout_ms = command_body(raw_body, default_ms, max_ms)
    except BadBody as exc:
        return error(400, "bad_request", str(exc))
    try:
        return await send(command, args, timeout_ms / 1000), 200
    except TransportError as exc:
        return transport_error(exc)
