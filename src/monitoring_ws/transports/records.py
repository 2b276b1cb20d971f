"""Command records: what was asked of an agent, by whom, over which transport, and how it
ended (docs/api.md, "Command records"). Plain values and transitions; no I/O."""

from __future__ import annotations

import enum
from collections.abc import Mapping
from typing import Any, Self

import attrs

from ..protocol import INTERRUPTED, CommandResult
from .base import Requester

__all__ = ["FINISHED", "CommandRecord", "CommandState", "RecordQuery", "Requester"]


class CommandState(enum.StrEnum):
    #: Accepted, not yet handed to the agent.
    QUEUED = "queued"
    #: Handed to the agent; no result yet.
    SENT = "sent"
    SUCCEEDED = "succeeded"
    #: The agent answered ``ok: false`` (the error says why).
    FAILED = "failed"
    #: No result within ``timeoutMs`` while the agent stayed connected.
    TIMED_OUT = "timed_out"
    #: Cancelled through the API (the agent, when it speaks ``cancel``, was told to stop).
    CANCELLED = "cancelled"
    #: The agent went away before answering and did not answer by the deadline.
    AGENT_DISCONNECTED = "agent_disconnected"


#: States the server stops waiting in; a late result can still turn the last three into
#: succeeded or failed (``late`` is then true).
FINISHED = frozenset(
    {
        CommandState.SUCCEEDED,
        CommandState.FAILED,
        CommandState.CANCELLED,
        CommandState.TIMED_OUT,
        CommandState.AGENT_DISCONNECTED,
    }
)
_ANSWERED = frozenset({CommandState.SUCCEEDED, CommandState.FAILED})


@attrs.define(slots=True)
class CommandRecord:
    """One command's record; ``to_json`` is what the API and the database hold."""

    command_id: str
    agent_id: str
    command: str
    args: Mapping[str, Any]
    timeout_ms: int
    transport: str
    requested_by: Requester
    created_ms: int
    state: CommandState = CommandState.QUEUED
    updated_ms: int = 0
    sent_ms: int | None = None
    finished_ms: int | None = None
    result: CommandResult | None = None
    #: The result arrived after the server had stopped waiting.
    late: bool = False
    #: Times the command was handed to the agent (a reconnect re-sends it).
    attempts: int = 0
    #: Its output is sent as it happens (``GET /api/commands/:id/output``).
    stream_output: bool = False
    #: The operator's signed intent it carries (re-sent with it), or None.
    intent: Mapping[str, Any] | None = None

    @property
    def deadline_ms(self) -> int:
        return self.created_ms + self.timeout_ms

    @property
    def finished(self) -> bool:
        return self.state in FINISHED

    def sent(self, now_ms: int) -> None:
        self.state, self.updated_ms, self.attempts = CommandState.SENT, now_ms, self.attempts + 1
        if self.sent_ms is None:
            self.sent_ms = now_ms

    def finish(self, state: CommandState, now_ms: int) -> None:
        self.state, self.updated_ms, self.finished_ms = state, now_ms, now_ms

    def answered(self, result: CommandResult, now_ms: int) -> bool:
        """Take the agent's result; False when it changes nothing (already answered)."""
        if self.state in _ANSWERED or self.result is not None:
            return False
        self.result = result
        error = result.error
        if self.state is CommandState.CANCELLED:
            self.updated_ms = now_ms  # kept as the cancel's outcome
            return True
        self.late = self.finished
        if error is not None and error.code == INTERRUPTED:
            state = CommandState.AGENT_DISCONNECTED
        else:
            state = CommandState.SUCCEEDED if result.ok else CommandState.FAILED
        self.finish(state, now_ms)
        return True

    def to_json(self) -> dict[str, Any]:
        return {
            "commandId": self.command_id,
            "agentId": self.agent_id,
            "command": self.command,
            "args": dict(self.args),
            "timeoutMs": self.timeout_ms,
            "transport": self.transport,
            "requestedBy": self.requested_by.to_json(),
            "state": self.state.value,
            "createdAt": self.created_ms,
            "updatedAt": self.updated_ms,
            "sentAt": self.sent_ms,
            "finishedAt": self.finished_ms,
            "result": None if self.result is None else self.result.to_payload(),
            "late": self.late,
            "attempts": self.attempts,
            "streamOutput": self.stream_output,
            **({} if self.intent is None else {"intent": dict(self.intent)}),
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Self:
        result = value.get("result")
        return cls(
            command_id=value["commandId"],
            agent_id=value["agentId"],
            command=value["command"],
            args=value["args"],
            timeout_ms=value["timeoutMs"],
            transport=value["transport"],
            requested_by=Requester.from_json(value["requestedBy"]),
            created_ms=value["createdAt"],
            state=CommandState(value["state"]),
            updated_ms=value["updatedAt"],
            sent_ms=value.get("sentAt"),
            finished_ms=value.get("finishedAt"),
            result=None if result is None else CommandResult.from_payload(result),
            late=bool(value.get("late")),
            attempts=int(value.get("attempts", 0)),
            stream_output=value.get("streamOutput") is True,
            intent=value.get("intent"),
        )


@attrs.frozen
class RecordQuery:
    """A page of command history: newest first, filtered, after a cursor."""

    agent_id: str | None = None
    command: str | None = None
    state: CommandState | None = None
    #: ``createdAt`` bounds, ms since the epoch (inclusive).
    since_ms: int | None = None
    until_ms: int | None = None
    #: Who asked: a ``requestedBy`` label or credential (``token:NAME``).
    requested_by: str | None = None
    limit: int = 50
    #: Records strictly older than this ``(createdAt, commandId)`` (the previous page's end).
    before: tuple[int, str] | None = None

    def sql(self) -> tuple[str, list[Any]]:
        """``WHERE ... ORDER BY ... LIMIT`` over a table with ``command_id``, ``created_ms``
        and the ``record`` JSON (the state store's and the host's command log)."""
        clauses: list[str] = ["1"]
        params: list[Any] = []
        fields = {
            "$.agentId": self.agent_id,
            "$.command": self.command,
            "$.state": None if self.state is None else self.state.value,
        }
        for path, value in fields.items():
            if value is not None:
                clauses.append(f"json_extract(record, '{path}') = ?")
                params.append(value)
        if self.since_ms is not None:
            clauses.append("created_ms >= ?")
            params.append(self.since_ms)
        if self.until_ms is not None:
            clauses.append("created_ms <= ?")
            params.append(self.until_ms)
        if self.requested_by is not None:
            clauses.append(
                "(json_extract(record, '$.requestedBy.label') = ? "
                "OR json_extract(record, '$.requestedBy.credential') = ?)"
            )
            params += [self.requested_by, self.requested_by]
        if self.before is not None:
            clauses.append("(created_ms < ? OR (created_ms = ? AND command_id < ?))")
            params += [self.before[0], self.before[0], self.before[1]]
        order = " ORDER BY created_ms DESC, command_id DESC LIMIT ?"
        return " WHERE " + " AND ".join(clauses) + order, [*params, self.limit]
