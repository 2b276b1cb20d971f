"""Commands in flight: sent to a connection, waiting for its ``command_result``."""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import attrs
import trio

from ..clock import wall_ms
from ..protocol import Command, CommandResult
from ..transports import AgentGoneError, CommandOutcome, CommandTimeoutError

if TYPE_CHECKING:
    from .connection import AgentConnection

__all__ = ["PendingCommands"]


@attrs.define
class _Pending:
    connection: AgentConnection
    done: trio.Event = attrs.field(factory=trio.Event)
    result: CommandResult | None = None


class PendingCommands:
    """Matches results to waiting callers; a result nobody waits for is counted, not kept."""

    def __init__(self) -> None:
        self._pending: dict[str, _Pending] = {}
        self.unmatched_results = 0

    def __len__(self) -> int:
        return len(self._pending)

    async def run(self, connection: AgentConnection, command: Command) -> CommandOutcome:
        """Send ``command`` and wait up to its ``timeout_ms`` for the result."""
        pending = _Pending(connection)
        self._pending[command.command_id] = pending
        try:
            frame = connection.session.command(command, wall_ms())
            if connection.send_frame(frame):
                with trio.move_on_after(command.timeout_ms / 1000):
                    await pending.done.wait()
            result = pending.result
            if result is not None:
                return _outcome(result)
            if pending.done.is_set() or connection.closing is not None:
                raise AgentGoneError(
                    f"agent {connection.agent_id} disconnected before answering",
                    command.command_id,
                )
            raise CommandTimeoutError(
                f"no result within {math.ceil(command.timeout_ms)} ms", command.command_id
            )
        finally:
            del self._pending[command.command_id]

    def resolve(self, connection: AgentConnection, result: CommandResult) -> None:
        pending = self._pending.get(result.command_id)
        if pending is None or pending.connection.agent_id != connection.agent_id:
            self.unmatched_results += 1
            return
        pending.result = result
        pending.done.set()

    def connection_lost(self, connection: AgentConnection) -> None:
        """Wake every caller waiting on ``connection``: the agent is gone."""
        for pending in self._pending.values():
            if pending.connection is connection and pending.result is None:
                pending.done.set()


def _outcome(result: CommandResult) -> CommandOutcome:
    error = result.error
    return CommandOutcome(
        command_id=result.command_id,
        ok=result.ok,
        duration_ms=result.duration_ms,
        result=result.result,
        error_code=None if error is None else error.code,
        error_message=None if error is None else error.message,
    )
