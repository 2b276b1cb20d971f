"""Routes over the state database: command records (both API trees) and the telemetry spool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from quart import Quart, Response, request

from ..protocol import AGENT_ID
from ..protocol.payloads import NAME
from .http import error

if TYPE_CHECKING:
    from .gateway import Gateway
    from .records import CommandRecord

__all__ = ["COMMAND_PATHS", "add_state_routes"]

#: Where a command's record lives, per API tree (a 202 names it in ``Location``).
COMMAND_PATHS = {"websocket": "/api/websocket/commands", "neutral": "/api/commands"}
MAX_TELEMETRY_PAGE = 1000


def add_state_routes(app: Quart, gateway: Gateway) -> None:
    commands = gateway.commands

    async def find(command_id: str) -> CommandRecord | Response:
        if not NAME.fullmatch(command_id):
            return error(400, "invalid_command_id", "commandId: 1-128 chars of [A-Za-z0-9._:-]")
        record = await commands.get(command_id)
        if record is None:
            return error(404, "unknown_command", f"no record of command {command_id}")
        return record

    async def get_record(command_id: str) -> dict[str, Any] | Response:
        record = await find(command_id)
        return record if isinstance(record, Response) else record.to_json()

    async def cancel_record(command_id: str) -> dict[str, Any] | Response:
        record = await find(command_id)
        if isinstance(record, Response):
            return record
        _, node = await commands.locate(command_id)
        if node is not None and record.finished_ms is None:
            return error(
                409,
                "command_elsewhere",
                f"command {command_id} runs on node {node}: send the DELETE to that node",
                node=node,
            )
        if record.finished_ms is not None:
            return error(
                409,
                "command_finished",
                f"command {command_id} already ended: {record.state.value}",
                command=record.to_json(),
            )
        cancelled = await commands.cancel(command_id)
        assert cancelled is not None  # noqa: S101 - it was live a moment ago
        return cancelled.to_json()

    for tree, path in COMMAND_PATHS.items():
        rule = f"{path}/<command_id>"
        app.add_url_rule(rule, f"{tree}_get_command", get_record, methods=["GET"])
        app.add_url_rule(rule, f"{tree}_cancel_command", cancel_record, methods=["DELETE"])

    @app.get("/api/websocket/stats")
    async def stats() -> dict[str, Any]:
        spool, store = gateway.spool, gateway.store
        return {
            "openConnections": gateway.open_connections,
            "commandsInFlight": len(commands),
            # connections, authenticated, closed_<code>, refused_<code>, duplicates (nonces)
            "counters": dict(sorted(gateway.stats.items())),
            "deliveryDuplicates": spool.duplicates,
            "unmatchedResults": commands.unmatched_results,
            "store": {
                "commits": store.commits,
                "failedCommits": spool.failed_commits,
                "pendingWrites": store.pending,
            },
        }

    @app.get("/api/websocket/telemetry")
    async def telemetry() -> dict[str, Any] | Response:
        after = request.args.get("after", default=0, type=int)
        limit = request.args.get("limit", default=100, type=int)
        agent_id = request.args.get("agentId")
        if after is None or after < 0:
            return error(400, "bad_request", "after must be a non-negative row id")
        if limit is None or not 1 <= limit <= MAX_TELEMETRY_PAGE:
            return error(400, "bad_request", f"limit must be between 1 and {MAX_TELEMETRY_PAGE}")
        if agent_id is not None and not AGENT_ID.fullmatch(agent_id):
            return error(400, "invalid_agent_id", "agentId: 1-128 chars of [A-Za-z0-9._:-]")
        items = await gateway.store.telemetry(after, limit, agent_id)
        return {"items": items, "next": items[-1]["id"] if items else after}
