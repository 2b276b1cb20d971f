"""What every HTTP route shares, the host's and plugins' alike: JSON errors, the command
body, and transport failures as statuses (docs/api.md, "Errors")."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import attrs
from quart import Response, g, request
from werkzeug.exceptions import HTTPException

from .host.tokens import ApiToken
from .openapi import ID_PATTERN
from .protocol import AGENT_ID
from .protocol.intent import IntentRefusedError, fitting_args, signer_ids
from .protocol.payloads import NAME
from .protocol.strictjson import JSONRejectedError, loads
from .transports import CommandOrder, CommandOutcome, Requester, TransportError

if TYPE_CHECKING:
    from .host.command_service import CommandService

__all__ = [
    "MAX_BODY_BYTES",
    "Answer",
    "BadBody",
    "CommandBody",
    "HistoryQuery",
    "bad_agent",
    "command_answer",
    "command_body",
    "error",
    "error_body",
    "forbidden",
    "history_query",
    "http_error_body",
    "int_arg",
    "reach",
    "reaches",
    "recent_logs_answer",
    "run_command_request",
    "strict_json",
    "token",
    "transport_error",
]

MAX_BODY_BYTES = 1 << 20


#: The members of a command POST's body (openapi.COMMAND_SCHEMAS["CommandRequest"]).
_MEMBERS = ("command", "args", "timeoutMs", "wait", "requestedBy", "streamOutput", "intent")
_TYPES: dict[str, tuple[str, tuple[type, ...]]] = {
    "command": ("string", (str,)),
    "args": ("object", (dict,)),
    "timeoutMs": ("integer", (int, float)),
    "wait": ("boolean", (bool,)),
    "requestedBy": ("string", (str,)),
    "streamOutput": ("boolean", (bool,)),
    "intent": ("object", (dict,)),
}
#: An agent id or command id in a path: 1-128 of these characters.
ID_RULE = "1-128 chars of [A-Za-z0-9._:-], the first a letter or digit"


def error_body(code: str, message: str, **extra: Any) -> dict[str, Any]:
    """The API's JSON error (docs/api.md, "Errors")."""
    return {"error": {"code": code, "message": message, **extra}}


def error(status: int, code: str, message: str, **extra: Any) -> Response:
    body = error_body(code, message, **extra)
    return Response(json.dumps(body), status=status, mimetype="application/json")


def http_error_body(exc: HTTPException) -> dict[str, Any]:
    """The JSON error for one of werkzeug's HTTP exceptions (413, 405, 408...)."""
    code = (exc.name or "error").lower().replace(" ", "_")
    return error_body(code, exc.description or exc.name)


class BadBody(ValueError):
    """A request body the API refuses; the message says what is wrong."""


class IntentRejected(BadBody):
    """An ``intent`` that does not fit the body or cannot be checked (409)."""


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
    #: ``streamOutput``: the output as it happens (``GET /api/commands/:id/output``).
    stream_output: bool = False
    #: ``intent``: the operator's signed intent, relayed unchanged (protocol/intent.py).
    intent: dict[str, Any] | None = None


def strict_json(raw: str | bytes) -> Any:
    """A request body read with the protocol's strict reader; raises ``BadBody``."""
    try:
        return loads(raw.decode("utf-8") if isinstance(raw, bytes) else raw)
    except UnicodeDecodeError:
        raise BadBody("the body is not UTF-8 text") from None
    except JSONRejectedError as exc:
        raise BadBody(f"the body is not JSON this API accepts: {exc}") from None


def command_body(raw: str | bytes, default_ms: int, max_ms: int) -> CommandBody:
    """Check a command POST's body with the protocol's strict reader: what could not be
    signed (NaN, unsafe integers, duplicate keys, deep nesting) never becomes a command."""
    body = strict_json(raw)
    if not isinstance(body, dict):
        raise BadBody('the body must be a JSON object: {"command": "ping", "args": {}}')
    _check_schema(body)
    command: str = body["command"]
    args: dict[str, Any] = body.get("args", {})
    timeout_ms = body.get("timeoutMs", default_ms)
    if isinstance(timeout_ms, float):  # 1000.0 is 1000 (the schema's integer)
        timeout_ms = int(timeout_ms)
    if not timeout_ms <= max_ms:
        raise BadBody(f'"timeoutMs" must be between 1 and {max_ms}')
    wait: bool = body.get("wait", True)
    label: str | None = body.get("requestedBy")
    intent = body.get("intent")
    if intent is not None:
        args = _signed_args(intent, command, body.get("args"))
    stream = body.get("streamOutput", False)
    return CommandBody(command, args, timeout_ms, wait, label, stream, intent)


def _signed_args(intent: dict[str, Any], command: str, args: Any) -> dict[str, Any]:
    """The args the operator signed: the body's own must be those, or absent."""
    try:
        return fitting_args(intent, command, args)
    except IntentRefusedError as exc:
        raise IntentRejected(f"intent: {exc.message}") from None


def _check_schema(body: dict[str, Any]) -> None:
    """The rules of the ``CommandRequest`` schema /openapi.json describes, checked by hand
    (jsonschema per request was ~7 % of a command's server time; the strict reader has
    already refused what ``JsonValue`` forbids). Messages as jsonschema words them;
    tests/test_properties.py checks both agree on generated bodies."""
    if "command" not in body:
        raise BadBody("the body: 'command' is a required property")
    unexpected = [name for name in body if name not in _MEMBERS]
    if unexpected:
        listed = ", ".join(repr(name) for name in unexpected[:5])
        verb = "was" if len(unexpected) == 1 else "were"
        raise BadBody(
            f"the body: Additional properties are not allowed ({listed} {verb} unexpected)"
        )
    for name, value in body.items():
        kind, types = _TYPES[name]
        wrong = not isinstance(value, types) or (kind != "boolean" and isinstance(value, bool))
        if wrong or (kind == "integer" and isinstance(value, float) and not value.is_integer()):
            raise BadBody(f"{name}: {_shown(value)} is not of type {kind!r}")
    if not NAME.fullmatch(body["command"]):
        raise BadBody(f"command: {_shown(body['command'])} does not match {ID_PATTERN!r}")
    if "timeoutMs" in body and body["timeoutMs"] < 1:
        raise BadBody(f"timeoutMs: {_shown(body['timeoutMs'])} is less than the minimum of 1")
    label = body.get("requestedBy")
    if label is not None and not 1 <= len(label) <= 128:
        problem = "should be non-empty" if not label else "is too long"
        raise BadBody(f"requestedBy: {_shown(label)} {problem}")


def _shown(value: Any) -> str:
    return repr(value)[:200]


def transport_error(exc: TransportError) -> Response:
    """The documented status and JSON error of a transport failure."""
    return error(exc.status, exc.code, str(exc), **exc.extra)


@attrs.frozen
class Answer:
    """A command route's answer, whichever server shell sends it (the Quart route or the
    lean one): status, JSON body, headers, and what the request's audit line adds."""

    status: int
    body: dict[str, Any]
    headers: tuple[tuple[str, str], ...] = ()
    audit: dict[str, Any] = attrs.field(factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body).encode()


def _failed(status: int, code: str, message: str, **extra: Any) -> Answer:
    return Answer(status, error_body(code, message, **extra))


async def command_answer(
    service: CommandService,
    agent_id: str,
    raw_body: str | bytes,
    *,
    token: ApiToken | None,
    address: str,
    via: str | None,
    records_path: str,
) -> Answer:
    """A command POST's whole answer: check the body, hand the order to ``service``
    (``via``: that transport only, answered without its name: the seed's shape), map
    failures to statuses. A 202's ``Location`` is under ``records_path``."""
    try:
        body = command_body(raw_body, service.default_timeout_ms, service.max_timeout_ms)
    except IntentRejected as exc:
        return _failed(409, "intent_rejected", str(exc))
    except BadBody as exc:
        return _failed(400, "bad_request", str(exc))
    if token is not None and not token.may_send(body.command):
        scope = f"commands:send:{body.command}"
        message = f"the token {token.name} may not send {body.command!r}"
        return _failed(403, "forbidden", message, scope=scope)
    asked_by = Requester(address, None if token is None else token.credential, body.label)
    order = CommandOrder(
        agent_id,
        body.command,
        body.args,
        body.timeout_ms,
        asked_by,
        stream_output=body.stream_output,
        intent=body.intent,
    )
    audit: dict[str, Any] = {"command": body.command}  # what was asked, and who signed it
    if body.intent is not None:
        audit["operatorKeys"] = signer_ids(body.intent)
    try:
        if not body.wait:
            accepted = await service.submit(order, via=via)
            location = f"{records_path}/{accepted.command_id}"
            answer = {"commandId": accepted.command_id, "state": accepted.state}
            audit["commandId"] = accepted.command_id
            return Answer(202, {**answer, "location": location}, (("Location", location),), audit)
        routed = await service.run(order, via=via)
    except TransportError as exc:
        return Answer(exc.status, error_body(exc.code, str(exc), **exc.extra), (), audit)
    outcome = routed.outcome
    assert isinstance(outcome, CommandOutcome)  # noqa: S101 - run raises the others
    audit["commandId"] = outcome.command_id
    return Answer(200, outcome.to_json() if via is not None else routed.to_json(), (), audit)


async def run_command_request(
    service: CommandService, agent_id: str, *, via: str | None, records_path: str
) -> Response:
    """``command_answer`` for the Quart route in flight."""
    answer = await command_answer(
        service,
        agent_id,
        await request.get_data(),
        token=token(),
        address=g.get("address") or request.remote_addr or "unknown",
        via=via,
        records_path=records_path,
    )
    g.audit = answer.audit
    response = Response(answer.encoded(), status=answer.status, mimetype="application/json")
    for name, value in answer.headers:
        response.headers[name] = value
    return response


def bad_agent(agent_id: str) -> Response | None:
    """The 400 for an agent id in a path that is not one; None when it is."""
    if AGENT_ID.fullmatch(agent_id):
        return None
    return error(400, "invalid_agent_id", f"agentId: {ID_RULE}")


@attrs.frozen
class HistoryQuery:
    """``?after=&limit=&since=&agentId=&type=`` of a telemetry history route, checked."""

    after: int
    limit: int
    since_ms: int
    agent_id: str | None
    kind: str | None


def history_query(max_page: int, kinds: frozenset[str]) -> HistoryQuery | Response:
    """The request's history query, or the 400 (a bad value) or 403 (a token that
    reaches some agents only and names none of them) to answer instead."""
    after, limit = int_arg("after", 0), int_arg("limit", 100)
    since = int_arg("since", 0)
    agent_id, kind = request.args.get("agentId"), request.args.get("type")
    if after is None or after < 0:
        return error(400, "bad_request", "after must be a non-negative row id")
    if limit is None or not 1 <= limit <= max_page:
        return error(400, "bad_request", f"limit must be between 1 and {max_page}")
    if since is None:
        return error(400, "bad_request", "since must be a time in ms since the epoch")
    if kind is not None and kind not in kinds:
        return error(400, "bad_request", f"type must be {' or '.join(sorted(kinds))}")
    if agent_id is not None and (bad := bad_agent(agent_id)) is not None:
        return bad
    presented = token()
    if presented is not None and presented.agents and (agent_id is None or not reaches(agent_id)):
        message = f"the token {presented.name} reaches some agents only: name one it reaches"
        return forbidden("agents", message)
    return HistoryQuery(after, limit, since, agent_id, kind)


def recent_logs_answer(
    recent_logs: Callable[[str, int], list[dict[str, Any]]], agent_id: str, ring: int
) -> dict[str, Any] | Response:
    """``GET .../agents/:agentId/logs?limit=N``: its last ``limit`` lines of the ``ring``
    the server keeps (more than the ring keeps is all it keeps)."""
    if (bad := bad_agent(agent_id)) is not None:
        return bad
    limit = int_arg("limit", 100)
    if limit is None or limit < 1:
        return error(400, "bad_request", f"limit must be a number from 1 (at most {ring} kept)")
    return {"agentId": agent_id, "entries": recent_logs(agent_id, min(limit, ring))}


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


def reach() -> Callable[[str], bool]:
    """``reaches`` with this request's token looked up once: for a list of agents."""
    found = token()
    return found.reaches if found is not None and found.agents else _everyone


def _everyone(agent_id: str) -> bool:
    return True


def forbidden(scope: str, message: str) -> Response:
    return error(403, "forbidden", message, scope=scope)
