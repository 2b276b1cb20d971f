"""Commands over agent connections, each with a durable record (docs/api.md).

A command is recorded ``queued``, handed to the agent (``sent``), and ends ``succeeded``,
``failed``, ``timed_out``, ``cancelled`` or ``agent_disconnected``. Until its deadline a
command whose agent went away stays live: when the agent comes back (to this server, or to
this server after a restart) it is sent again; the agent runs a ``commandId`` at most once.
A result that arrives after the server stopped waiting is still recorded (``late``).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any

import attrs
import trio

from ..clock import wall_ms
from ..protocol import (
    FEATURE_CANCEL,
    FEATURE_INTENTS,
    FEATURE_OUTPUT,
    Command,
    CommandError,
    CommandResult,
    encoded_size,
)
from ..transports import (
    AgentGoneError,
    CommandOutcome,
    CommandTimeoutError,
    InvalidCommandError,
    Requester,
)
from ..transports.records import CommandRecord, CommandState

if TYPE_CHECKING:
    from .links import AgentLink
    from .store import StateStore

__all__ = ["CommandBook", "CommandCancelledError"]

#: Finished records kept in memory, so a late result needs no database read: at most this
#: many, and about this many bytes of results (the database has them all).
RECENT = 10_000
RECENT_BYTES = 64 << 20


class CommandCancelledError(AgentGoneError):
    """The command was cancelled through the API while a caller waited for it."""

    code = "command_cancelled"
    status = 409


@attrs.define
class _Live:
    """A command the server still waits on."""

    record: CommandRecord
    connection: AgentLink | None
    done: trio.Event = attrs.field(factory=trio.Event)
    #: What it weighs in memory (its frame's length): sizes its events without encoding.
    weight: int = 512


class CommandBook:
    """Live commands by id and by agent, recently finished ones, and the store behind them."""

    def __init__(
        self,
        store: StateStore,
        *,
        elsewhere: Callable[[str], Awaitable[tuple[CommandRecord, str] | None]] | None = None,
        ended: Callable[[str, str, float], None] | None = None,
        changed: Callable[[CommandRecord, int], None] | None = None,
    ) -> None:
        """``elsewhere``: other nodes' records (a cluster); ``ended(transport, state,
        seconds)``: told when a live command ends (metrics)."""
        self._store = store
        self._live: dict[str, _Live] = {}
        self._by_agent: dict[str, set[str]] = {}
        self._recent: OrderedDict[str, tuple[CommandRecord, int]] = OrderedDict()
        self._recent_bytes = 0
        self.unmatched_results = 0
        #: In a cluster: records other nodes keep, by id -> (record, node).
        self._elsewhere = elsewhere
        self._ended = ended
        #: Told of a record (and its weight in bytes) when it is sent and when it ends
        #: (live events).
        self._changed = changed

    def __len__(self) -> int:
        return len(self._live)

    def restore(self, records: list[CommandRecord], now_ms: int) -> None:
        """Take over what a previous run left open: its connections are gone."""
        for record in records:
            if record.deadline_ms <= now_ms:
                record.finish(CommandState.AGENT_DISCONNECTED, now_ms)
                self._remember(record)
            else:
                record.state, record.updated_ms = CommandState.AGENT_DISCONNECTED, now_ms
                self._add(_Live(record, None))
            self._store.put_command(record)

    # -- sending ----------------------------------------------------------------------------

    def submit(
        self,
        connection: AgentLink,
        command: str,
        args: dict[str, object],
        timeout_ms: int,
        *,
        requested_by: Requester,
        command_id: str,
        stream_output: bool = False,
        intent: Mapping[str, Any] | None = None,
    ) -> CommandRecord:
        """Sign a command, record it and send it now; it runs on without a caller waiting.

        Raises ``InvalidCommandError`` (nothing recorded) when it cannot be signed."""
        now = wall_ms()
        stream_output = stream_output and connection.speaks(FEATURE_OUTPUT)
        relayed = intent if connection.speaks(FEATURE_INTENTS) else None
        frame = connection.command_frame(
            Command(command_id, command, args, timeout_ms, stream_output, relayed), now
        )
        record = CommandRecord(
            command_id=command_id,
            agent_id=connection.agent_id,
            command=command,
            args=args,
            timeout_ms=timeout_ms,
            transport="websocket",
            requested_by=requested_by,
            created_ms=now,
            updated_ms=now,
            stream_output=stream_output,
            intent=intent,
        )
        live = _Live(record, connection, weight=len(frame))
        self._add(live)
        if connection.send_frame(frame):
            record.sent(now)
        self._store.put_command(record)
        if self._changed is not None:
            self._changed(record, live.weight)
        return record

    async def wait(self, record: CommandRecord) -> CommandOutcome:
        """Wait for a submitted command's result; raises at the deadline (the record says
        ``timed_out``), when the agent leaves or when the command is cancelled."""
        live = self._live.get(record.command_id)
        if live is not None:
            with trio.move_on_at(_trio_time(record.deadline_ms)):
                await live.done.wait()
            self._expire(live, wall_ms(), force=not live.done.is_set())
        return _outcome_of(record)

    def _send(self, live: _Live, now_ms: int) -> None:
        record, connection = live.record, live.connection
        if connection is None or connection.closing is not None:
            return
        remaining = max(1, record.deadline_ms - now_ms)
        stream = record.stream_output and connection.speaks(FEATURE_OUTPUT)
        relayed = record.intent if connection.speaks(FEATURE_INTENTS) else None
        command = Command(
            record.command_id, record.command, dict(record.args), remaining, stream, relayed
        )
        try:
            frame = connection.command_frame(command, now_ms)
        except InvalidCommandError as exc:
            # A record from an older version or a restored database: fail it, never the
            # connection it was going to.
            record.result = CommandResult(
                record.command_id, False, 0, error=CommandError(exc.code, str(exc))
            )
            record.finish(CommandState.FAILED, now_ms)
            self._drop(live)
            self._store.put_command(record)
            return
        if connection.send_frame(frame):
            record.sent(now_ms)
            self._store.put_command(record)

    def agent_connected(self, connection: AgentLink) -> None:
        """Send again what this agent's earlier connection (or server run) left open."""
        ids = self._by_agent.get(connection.agent_id)
        if not ids:
            return
        now = wall_ms()
        for command_id in sorted(ids, key=lambda i: self._live[i].record.created_ms):
            live = self._live[command_id]
            if live.connection is not connection:
                live.connection = connection
                self._send(live, now)

    def connection_lost(self, connection: AgentLink) -> None:
        """The agent left: its open commands wait for it until their deadlines."""
        ids = self._by_agent.get(connection.agent_id, ())
        now = wall_ms()
        for command_id in ids:
            live = self._live[command_id]
            if live.connection is connection:
                live.connection = None
                record = live.record
                record.state, record.updated_ms = CommandState.AGENT_DISCONNECTED, now
                self._store.put_command(record)
                live.done.set()  # a waiting caller answers 502 now; the record waits on

    # -- results, cancels, deadlines --------------------------------------------------------

    async def resolve(
        self, connection: AgentLink, result: CommandResult, *, size: int | None = None
    ) -> None:
        """Take an agent's result; ``size`` is its frame's length (what it weighs)."""
        now = wall_ms()
        live = self._live.get(result.command_id)
        if live is not None and live.record.agent_id == connection.agent_id:
            if live.record.answered(result, now):
                self._drop(live, size)
                self._store.put_command(live.record)
            return
        record = self._recent_record(result.command_id)
        if record is None:
            record = await self._store.get_command(result.command_id)
        if record is None or record.agent_id != connection.agent_id:
            self.unmatched_results += 1
            return
        if record.answered(result, now):
            self._remember(record, size)
            self._store.put_command(record)

    async def cancel(self, command_id: str) -> CommandRecord | None:
        """Cancel a live command (the agent is told when it speaks ``cancel``); the record,
        unchanged when it had already finished; None for an unknown id."""
        live = self._live.get(command_id)
        if live is None:
            return await self.get(command_id)
        now = wall_ms()
        connection = live.connection
        if (
            connection is not None
            and live.record.state is CommandState.SENT
            and connection.speaks(FEATURE_CANCEL)
        ):
            connection.send_cancel(command_id, now)
        live.record.finish(CommandState.CANCELLED, now)
        self._drop(live)
        self._store.put_command(live.record)
        return live.record

    def expire(self, now_ms: int) -> None:
        """Finish every live command past its deadline (called every few ms)."""
        for live in [v for v in self._live.values() if v.record.deadline_ms <= now_ms]:
            self._expire(live, now_ms, force=True)

    def _expire(self, live: _Live, now_ms: int, *, force: bool) -> None:
        record = live.record
        if record.finished_ms is not None or not (force or record.deadline_ms <= now_ms):
            return
        if record.state is CommandState.AGENT_DISCONNECTED:
            record.finish(CommandState.AGENT_DISCONNECTED, now_ms)
        else:
            record.finish(CommandState.TIMED_OUT, now_ms)
        self._drop(live)
        self._store.put_command(record)

    async def get(self, command_id: str) -> CommandRecord | None:
        """This node's record, else (in a cluster) the copy another node shared."""
        return (await self.locate(command_id))[0]

    async def locate(self, command_id: str) -> tuple[CommandRecord | None, str | None]:
        """The record and, when another node keeps it, that node's name."""
        live = self._live.get(command_id)
        if live is not None:
            return live.record, None
        record = self._recent_record(command_id)
        if record is None:
            record = await self._store.get_command(command_id)
        if record is None and self._elsewhere is not None:
            found = await self._elsewhere(command_id)
            if found is not None:
                return found
        return record, None

    def agent_of(self, command_id: str) -> str | None:
        """The agent a live or recently finished command went to (no database read)."""
        live = self._live.get(command_id)
        if live is not None:
            return live.record.agent_id
        record = self._recent_record(command_id)
        return None if record is None else record.agent_id

    # -- bookkeeping ------------------------------------------------------------------------

    def _add(self, live: _Live) -> None:
        record = live.record
        self._live[record.command_id] = live
        self._by_agent.setdefault(record.agent_id, set()).add(record.command_id)

    def _drop(self, live: _Live, result_size: int | None = None) -> None:
        record = live.record
        del self._live[record.command_id]
        ids = self._by_agent[record.agent_id]
        ids.discard(record.command_id)
        if not ids:
            del self._by_agent[record.agent_id]
        live.done.set()
        kept = self._remember(record, result_size)
        if self._changed is not None:
            self._changed(record, live.weight + kept)
        if self._ended is not None and record.finished_ms is not None:
            seconds = (record.finished_ms - record.created_ms) / 1000
            self._ended(record.transport, record.state.value, seconds)

    def _remember(self, record: CommandRecord, result_size: int | None = None) -> int:
        """Keep a finished record among the recent ones; what it weighs there."""
        result = record.result
        if result_size is None:
            result_size = 0 if result is None else encoded_size(result.result)
        size = 256 + result_size
        previous = self._recent.pop(record.command_id, None)
        if previous is not None:
            self._recent_bytes -= previous[1]
        self._recent[record.command_id] = (record, size)
        self._recent_bytes += size
        while len(self._recent) > RECENT or self._recent_bytes > RECENT_BYTES:
            _, (_, dropped) = self._recent.popitem(last=False)
            self._recent_bytes -= dropped
        return size

    def _recent_record(self, command_id: str) -> CommandRecord | None:
        kept = self._recent.get(command_id)
        return None if kept is None else kept[0]


def _trio_time(deadline_ms: int) -> float:
    return trio.current_time() + (deadline_ms - wall_ms()) / 1000


def _outcome_of(record: CommandRecord) -> CommandOutcome:
    result = record.result
    if result is not None and record.state in {CommandState.SUCCEEDED, CommandState.FAILED}:
        error = result.error
        return CommandOutcome(
            command_id=result.command_id,
            ok=result.ok,
            duration_ms=result.duration_ms,
            result=result.result,
            error_code=None if error is None else error.code,
            error_message=None if error is None else error.message,
        )
    command_id = record.command_id
    if record.state is CommandState.CANCELLED:
        raise CommandCancelledError(f"command {command_id} was cancelled", command_id)
    if record.state is CommandState.AGENT_DISCONNECTED:
        raise AgentGoneError(f"agent {record.agent_id} disconnected before answering", command_id)
    raise CommandTimeoutError(f"no result within {math.ceil(record.timeout_ms)} ms", command_id)
