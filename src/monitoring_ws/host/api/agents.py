"""The transport-neutral API: agents of every transport, commands through the router,
command records wherever they are kept (docs/api.md, "Any transport")."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from quart import Quart, Response, request

from ...protocol import AGENT_ID
from ...protocol.labels import LabelError
from ...protocol.payloads import NAME
from ...transports import (
    CommandConflictError,
    KeepsRecords,
    ListsAgents,
    TransportError,
    UnknownCommandError,
)
from ...transports.records import CommandState, RecordQuery
from ...web import (
    ID_RULE,
    BadBody,
    error,
    reach,
    reaches,
    run_command_request,
    strict_json,
    transport_error,
)
from ..command_service import CommandService
from ..commandlog import CommandLog
from ..fleet import Fleet, merge_listing
from ..plugins import CommandRoute
from ..selectors import Selector, SelectorError, parse_selector
from ..summary import summarize
from ..telemetry import TelemetryBus

__all__ = ["COMMANDS_PATH", "COMMAND_ROUTE", "add_agent_routes", "record_finder"]

#: Where a command's record lives (a 202 names it in ``Location``).
COMMANDS_PATH = "/api/commands"
#: ``POST /api/agents/:id/commands``, also served lean (commandroutes.py).
COMMAND_ROUTE = CommandRoute("/api/agents/", "/commands", None, COMMANDS_PATH)
DEFAULT_PAGE, MAX_PAGE = 50, 500
_HISTORY_ARGS = frozenset(
    {"agentId", "command", "state", "since", "until", "requestedBy", "limit", "cursor"}
)
_STATES = frozenset(state.value for state in CommandState)


def add_agent_routes(
    app: Quart, commands: CommandService, telemetry: TelemetryBus, fleet: Fleet
) -> None:
    router, log = commands.router, commands.log

    @app.get("/api/agents")
    async def list_agents() -> dict[str, Any] | Response:
        with_metrics = request.args.get("metrics")
        if with_metrics not in {None, "summary"}:
            return error(400, "bad_request", "metrics must be summary (or left out)")
        written = request.args.get("selector")
        try:
            selector = None if written is None else selector_of_query(written)
        except SelectorError as exc:
            return error(400, "invalid_selector", str(exc))
        everyone = await (fleet.agents() if selector is None else fleet.select(selector))
        allowed = reach()
        agents = [a for a in everyone if allowed(a["agentId"])]
        if with_metrics:  # the fleet table's numbers: one read for every agent
            latest = await telemetry.latest_many([a["agentId"] for a in agents])
            for entry in agents:
                sample = latest.get(entry["agentId"])
                entry["metrics"] = None if sample is None else summarize(**sample)
        return {
            "agents": agents,
            "count": len(agents),
            "transports": [t.name for t in router.transports],
        }

    @app.get("/api/transports")
    async def transports() -> dict[str, Any]:
        return {"transports": [{"name": t.name, **t.health()} for t in router.transports]}

    @app.get("/api/agents/<agent_id>")
    async def agent(agent_id: str) -> dict[str, Any] | Response:
        if not AGENT_ID.fullmatch(agent_id):
            return error(400, "invalid_agent_id", f"agentId: {ID_RULE}")
        answer: dict[str, Any] = {
            "agentId": agent_id,
            "connected": False,
            "lastSeen": None,
        }
        reported: dict[str, str] | None = None  # None: no transport knows its labels now
        for transport in router.transports:
            if isinstance(transport, ListsAgents):
                listing = await transport.describe_agent(agent_id)
                if listing is not None:
                    merge_listing(answer, transport.name, listing)
                    if listing.labels is not None:
                        reported = {**(reported or {}), **listing.labels}
        if reported is not None:
            await fleet.labels.saw({agent_id: reported})
        fleet.labelled(answer)
        answer["transports"] = await router.reachability(agent_id)
        answer["metrics"] = await telemetry.latest_metrics(agent_id)
        return answer

    @app.patch("/api/agents/<agent_id>/labels")
    async def agent_labels(agent_id: str) -> dict[str, Any] | Response:
        """Set (a string) or remove (null) the operator's labels of one agent."""
        if not AGENT_ID.fullmatch(agent_id):
            return error(400, "invalid_agent_id", f"agentId: {ID_RULE}")
        try:
            body = strict_json(await request.get_data())
        except BadBody as exc:
            return error(400, "bad_request", str(exc))
        changes = body.get("labels") if isinstance(body, dict) and len(body) == 1 else None
        if not isinstance(changes, dict) or not changes:
            return error(400, "bad_request", 'body must be {"labels": {"key": "value" or null}}')
        if not all(value is None or isinstance(value, str) for value in changes.values()):
            return error(400, "invalid_labels", "each label's value is a string, or null to remove")
        try:
            await fleet.labels.change(agent_id, changes)
        except LabelError as exc:
            return error(400, "invalid_labels", str(exc))
        return fleet.labelled({"agentId": agent_id})

    @app.post("/api/agents/<agent_id>/commands")
    async def send(agent_id: str) -> tuple[dict[str, Any], int] | Response:
        return await run_command_request(commands, agent_id, via=None, records_path=COMMANDS_PATH)

    _add_record_routes(app, commands.keepers, log)


def selector_of_query(written: str) -> Selector:
    """``?selector=``: a label selector, or the object form as JSON (``{...}``)."""
    if written.lstrip().startswith("{"):
        try:
            value = json.loads(written)
        except ValueError:
            raise SelectorError("selector: the object form must be JSON") from None
        return parse_selector(value)
    return parse_selector(written)


def history_query(args: Mapping[str, str]) -> RecordQuery:
    """``GET /api/commands``'s query string, checked; raises ``BadBody`` saying what."""
    unknown = sorted(set(args) - _HISTORY_ARGS)
    if unknown:
        raise BadBody(f"unknown parameter {', '.join(unknown)} (known: {sorted(_HISTORY_ARGS)})")

    def integer(name: str) -> int | None:
        value = args.get(name)
        if value is None:
            return None
        if not value.isdigit() or len(value) > 16:
            raise BadBody(f"{name} must be milliseconds since the epoch")
        return int(value)

    agent_id, command = args.get("agentId"), args.get("command")
    if agent_id is not None and not AGENT_ID.fullmatch(agent_id):
        raise BadBody(f"agentId: {ID_RULE}")
    if command is not None and not NAME.fullmatch(command):
        raise BadBody(f"command: {ID_RULE}")
    state = args.get("state")
    if state is not None and state not in _STATES:
        raise BadBody(f"state must be one of {', '.join(sorted(_STATES))}")
    requested_by = args.get("requestedBy")
    if requested_by is not None and not 1 <= len(requested_by) <= 128:
        raise BadBody("requestedBy must be 1-128 characters")
    given = integer("limit")
    limit = DEFAULT_PAGE if given is None else given
    if not 1 <= limit <= MAX_PAGE:
        raise BadBody(f"limit must be between 1 and {MAX_PAGE}")
    before = None
    cursor = args.get("cursor")
    if cursor is not None:
        created, _, command_id = cursor.partition("~")
        if not created.isdigit() or len(created) > 16 or not NAME.fullmatch(command_id):
            raise BadBody("cursor: pass the previous page's next as it is")
        before = (int(created), command_id)
    return RecordQuery(
        agent_id=agent_id,
        command=command,
        state=None if state is None else CommandState(state),
        since_ms=integer("since"),
        until_ms=integer("until"),
        requested_by=requested_by,
        limit=limit,
        before=before,
    )


def record_finder(
    log: CommandLog, keepers: Sequence[KeepsRecords]
) -> Callable[[str], Awaitable[dict[str, Any] | None]]:
    """How to find a command's record wherever it is kept: the host's log, then each
    transport that keeps records (as JSON; None when none has it)."""

    async def record_of(command_id: str) -> dict[str, Any] | None:
        record = await log.get(command_id)
        found = None if record is None else record.to_json()
        for transport in keepers if found is None else ():
            found = await transport.command_record(command_id)
            if found is not None:
                break
        return found

    return record_of


def _add_record_routes(app: Quart, keepers: Sequence[KeepsRecords], log: CommandLog) -> None:
    """``/api/commands``: the host's log first, then transports that keep records."""

    @app.get(COMMANDS_PATH)
    async def history() -> dict[str, Any] | Response:
        """Every transport's records, newest first, a page at a time (this node's)."""
        try:
            query = history_query(request.args)
        except BadBody as exc:
            return error(400, "bad_request", str(exc))
        pages = [await log.list(query)]
        pages += [await transport.list_records(query) for transport in keepers]
        merged = sorted(
            (record for page in pages for record in page),
            key=lambda r: (r["createdAt"], r["commandId"]),
            reverse=True,
        )
        full = len(merged) > query.limit or any(len(page) == query.limit for page in pages)
        merged = merged[: query.limit]
        # A cursor past the last record read, so records of agents this token does not
        # reach are skipped without ending the pages early.
        last = merged[-1] if merged and full else None
        allowed = reach()
        shown = [record for record in merged if allowed(record["agentId"])]
        following = None if last is None else f"{last['createdAt']}~{last['commandId']}"
        return {"commands": shown, "next": following}

    @app.get(f"{COMMANDS_PATH}/<command_id>")
    async def command_record(command_id: str) -> dict[str, Any] | Response:
        if not NAME.fullmatch(command_id):
            return error(400, "invalid_command_id", f"commandId: {ID_RULE}")
        found = await find_record(command_id)
        if found is None:
            return error(404, "unknown_command", f"no record of command {command_id}")
        return found

    record_of = record_finder(log, keepers)

    async def find_record(command_id: str) -> dict[str, Any] | None:
        """A command's record wherever it is kept; None also when the token does not
        reach its agent (a record says nothing of agents the token may not see)."""
        found = await record_of(command_id)
        return found if found is not None and reaches(found["agentId"]) else None

    @app.delete(f"{COMMANDS_PATH}/<command_id>")
    async def cancel(command_id: str) -> dict[str, Any] | Response:
        if not NAME.fullmatch(command_id):
            return error(400, "invalid_command_id", f"commandId: {ID_RULE}")
        if await find_record(command_id) is None:
            return error(404, "unknown_command", f"no record of command {command_id}")
        record = await log.get(command_id)
        if record is not None:  # the log keeps only commands that ended
            message = f"command {command_id} already ended: {record.state.value}"
            return transport_error(
                CommandConflictError("command_finished", message, command=record.to_json())
            )
        for transport in keepers:
            try:
                return await transport.cancel_command(command_id)
            except UnknownCommandError:
                continue
            except TransportError as exc:
                return transport_error(exc)
        return error(404, "unknown_command", f"no record of command {command_id}")
