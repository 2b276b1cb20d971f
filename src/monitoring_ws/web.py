"""What every HTTP route shares, the host's and plugins' alike: JSON errors, the command
body, and transport failures as statuses (docs/api.md, "Errors")."""

from __future__ import annotations

import copy
import json
from typing import TYPE_CHECKING, Any

import attrs
from jsonschema import Draft202012Validator
from jsonschema.exceptions import best_match
from quart import Response, g, request

from .host.tokens import ApiToken
from .openapi import COMMAND_SCHEMAS
from .protocol.payloads import NAME
from .protocol.strictjson import JSONRejectedError, loads
from .transports import CommandOrder, CommandOutcome, Requester, TransportError

if TYPE_CHECKING:
    from .host.command_service import CommandService

__all__ = [
    "MAX_BODY_BYTES",
    "BadBody",
    "CommandBody",
    "command_body",
    "error",
    "forbidden",
    "int_arg",
    "reaches",
    "requester",
    "run_command_request",
    "token",
    "transport_error",
]

MAX_BODY_BYTES = 1 << 20


def _command_request_validator() -> Draft202012Validator:
    """``CommandRequest``, its references resolved in place; the server's own limit on
    ``timeoutMs`` (``max_command_timeout_ms``) is checked after it."""
    request = copy.deepcopy(COMMAND_SCHEMAS["CommandRequest"])
    del request["properties"]["timeoutMs"]["maximum"]
    document = {**request, "components": {"schemas": COMMAND_SCHEMAS}}
    return Draft202012Validator(document)


_COMMAND_REQUEST = _command_request_validator()
#: An agent id or command id in a path: 1-128 of these characters.
ID_RULE = "1-128 chars of [A-Za-z0-9._:-], the first a letter or digit"


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    body = {"error": {"code": code, "message": message, **extra}}
    return Response(json.dumps(body), status=status, mimetype="application/json")


class BadBody(ValueError):
    """A request body the API refuses; the message says what is wrong."""


@attrs.frozen
class CommandBody:
    """A command POST's body, checked."""

    command: str
    args: dict[str, Any]
    timeout_ms: int
    #: False: answer 202 with the ``commandId`` at once; the record follows the command.
    wait: bool = True
    #: ``requestedBy``: a free label for the record (who or what asked).
    label: str | None = None


def command_body(raw: str | bytes, default_ms: int, max_ms: int) -> CommandBody:
    """Check a command POST's body with the protocol's strict reader: what could not be
    signed (NaN, unsafe integers, duplicate keys, deep nesting) never becomes a command."""
    try:
        text = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        body = loads(text)
    except UnicodeDecodeError:
        raise BadBody("the body is not UTF-8 text") from None
    except JSONRejectedError as exc:
        raise BadBody(f"the body is not JSON this API accepts: {exc}") from None
    if not isinstance(body, dict):
        raise BadBody('the body must be a JSON object: {"command": "ping", "args": {}}')
    mismatch = best_match(_COMMAND_REQUEST.iter_errors(body))
    if mismatch is not None:  # the schema /openapi.json describes (openapi.COMMAND_SCHEMAS)
        where = "/".join(str(part) for part in mismatch.absolute_path) or "the body"
        raise BadBody(f"{where}: {mismatch.message[:300]}")
    command = body.get("command")
    if not isinstance(command, str) or not NAME.fullmatch(command):
        raise BadBody('"command" must be a command name such as "ping"')
    args = body.get("args", {})
    if not isinstance(args, dict):
        raise BadBody('"args" must be a JSON object')
    timeout_ms = body.get("timeoutMs", default_ms)
    if isinstance(timeout_ms, float) and timeout_ms.is_integer():  # 1000.0 is 1000
        timeout_ms = int(timeout_ms)
    if isinstance(timeout_ms, bool) or not isinstance(timeout_ms, int):
        raise BadBody('"timeoutMs" must be an integer number of milliseconds')
    if not 1 <= timeout_ms <= max_ms:
        raise BadBody(f'"timeoutMs" must be between 1 and {max_ms}')
    wait = body.get("wait", True)
    if not isinstance(wait, bool):
        raise BadBody('"wait" must be true (answer with the result) or false (answer 202)')
    label = body.get("requestedBy")
    if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= 128):
        raise BadBody('"requestedBy" must be a string of 1-128 characters')
    return CommandBody(command, args, timeout_ms, wait, label)


def transport_error(exc: TransportError) -> Response:
    """The documented status and JSON error of a transport failure."""
    return error(exc.status, exc.code, str(exc), **exc.extra)


async def run_command_request(
    service: CommandService, agent_id: str, *, via: str | None, records_path: str
) -> tuple[dict[str, Any], int] | Response:
    """A command route's whole answer: parse the request's body, hand the order to the
    host's ``service`` (``via``: that transport only, and the answer without its name, the
    seed's shape), map failures to statuses. A 202's ``Location`` is under
    ``records_path``."""
    raw_body = await request.get_data()
    try:
        body = command_body(raw_body, service.default_timeout_ms, service.max_timeout_ms)
    except BadBody as exc:
        return error(400, "bad_request", str(exc))
    presented = token()
    if presented is not None and not presented.may_send(body.command):
        scope = f"commands:send:{body.command}"
        return forbidden(scope, f"the token {presented.name} may not send {body.command!r}")
    g.audit = {"command": body.command}  # the request's audit line names what was asked
    order = CommandOrder(agent_id, body.command, body.args, body.timeout_ms, requester(body.label))
    try:
        if not body.wait:
            accepted = await service.submit(order, via=via)
            g.audit["commandId"] = accepted.command_id
            location = f"{records_path}/{accepted.command_id}"
            answer = {"commandId": accepted.command_id, "state": accepted.state}
            response = Response(
                json.dumps({**answer, "location": location}),
                status=202,
                mimetype="application/json",
            )
            response.headers["Location"] = location
            return response
        routed = await service.run(order, via=via)
    except TransportError as exc:
        return transport_error(exc)
    outcome = routed.outcome
    assert isinstance(outcome, CommandOutcome)  # noqa: S101 - run raises the others
    g.audit["commandId"] = outcome.command_id
    return (outcome.to_json() if via is not None else routed.to_json()), 200


def int_arg(name: str, default: int) -> int | None:
    """A query parameter that must be a whole number: ``default`` when absent, None when
    it is there but not one (the route answers 400; never silently the default)."""
    value = request.args.get(name)
    if value is None:
        return default
    return int(value) if value.isdigit() and len(value) <= 18 else None


def token() -> ApiToken | None:
    """The API token this request presented (None when the server has no tokens)."""
    found: ApiToken | None = g.get("token")
    return found


def reaches(agent_id: str) -> bool:
    """Whether this request's token may see and act on ``agent_id`` (its agent globs)."""
    found = token()
    return found is None or found.reaches(agent_id)


def forbidden(scope: str, message: str) -> Response:
    return error(403, "forbidden", message, scope=scope)


def requester(label: str | None) -> Requester:
    """Who is asking, from the current request (the API's guard set the credential, and
    the address a trusted proxy forwarded)."""
    address = g.get("address") or request.remote_addr or "unknown"
    return Requester(address, g.get("credential"), label)
