"""The host-neutral ``Transport`` interface every way of reaching an agent implements."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

import attrs

if TYPE_CHECKING:
    from .records import RecordQuery

__all__ = [
    "IN_PROCESS",
    "AgentGoneError",
    "AgentListing",
    "AgentNotConnectedError",
    "ClusterUnavailableError",
    "CommandConflictError",
    "CommandNotSupportedError",
    "CommandOrder",
    "CommandOutcome",
    "CommandTimeoutError",
    "CommandTooLargeError",
    "InvalidCommandError",
    "KeepsOutput",
    "KeepsRecords",
    "KnowsSessions",
    "ListsAgents",
    "OutputWatch",
    "Requester",
    "SendsBatches",
    "ShuttingDownError",
    "StateUnavailableError",
    "Transport",
    "TransportError",
    "UnknownCommandError",
]


@attrs.frozen
class Requester:
    """Who asked for a command: the caller's address, which API token (a fingerprint, never
    the token) and an optional label the caller gave (``"requestedBy"`` in the body)."""

    address: str
    credential: str | None = None
    label: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {"address": self.address, "credential": self.credential, "label": self.label}

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> Requester:
        return cls(value["address"], value.get("credential"), value.get("label"))


#: Who asks when a plugin calls a transport directly rather than through the HTTP API.
IN_PROCESS = Requester("in-process")


@attrs.frozen
class CommandOrder:
    """One command for one agent, and who asked for it: what the host's
    ``CommandService`` hands a transport (and a cluster node hands the node holding the
    agent). Checked before a transport sees it: a command name, a timeout within the
    server's limit."""

    agent_id: str
    command: str
    args: Mapping[str, Any] = attrs.field(factory=dict)
    timeout_ms: int = 30_000
    requester: Requester = IN_PROCESS
    #: The id the command is to have (a job's ``{jobId}.{n}``); None lets the transport
    #: choose.
    command_id: str | None = None
    #: The id may have been sent before (a job carried on after a restart): a transport
    #: that keeps records looks for it first and answers from that record instead of
    #: sending it again.
    again: bool = False
    #: Send the output as it happens, where the transport and the agent can (the
    #: ``output`` extension; ``GET /api/commands/:id/output``).
    stream_output: bool = False
    #: The operator's signed intent (protocol/intent.py), relayed unchanged to agents
    #: that speak ``intents``; the transport never alters it.
    intent: Mapping[str, Any] | None = None

    @property
    def timeout_s(self) -> float:
        return self.timeout_ms / 1000


@attrs.frozen
class CommandOutcome:
    """What an agent answered to one command."""

    command_id: str
    ok: bool
    duration_ms: int
    result: Any = None
    error_code: str | None = None
    error_message: str | None = None

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {
            "commandId": self.command_id,
            "ok": self.ok,
            "durationMs": self.duration_ms,
        }
        if self.result is not None:
            body["result"] = self.result
        if self.error_code is not None:
            body["error"] = {"code": self.error_code, "message": self.error_message or ""}
        return body


class TransportError(Exception):
    """A command could not be carried out; ``code`` is stable, for API errors."""

    code = "transport_error"
    #: The HTTP status the API answers with (docs/api.md, "Errors").
    status = 500
    #: More members of the error body (e.g. ``commandId``).
    extra: dict[str, Any] = {}  # noqa: RUF012 - replaced per instance, never mutated


class AgentNotConnectedError(TransportError):
    status = 404
    code = "agent_not_connected"


class CommandNotSupportedError(TransportError):
    status = 400
    code = "command_not_supported"


class InvalidCommandError(TransportError):
    """The command cannot be signed or sent as asked (its arguments, its size)."""

    code = "invalid_command"
    status = 400


class CommandTooLargeError(InvalidCommandError):
    """The signed command frame would exceed the frame limit."""

    code = "command_too_large"
    status = 413


class CommandTimeoutError(TransportError):
    """No result within the command's timeout (the command may still run)."""

    code = "command_timeout"
    status = 504

    def __init__(self, message: str, command_id: str) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.extra = {"commandId": command_id}


class AgentGoneError(TransportError):
    """The agent disconnected after the command was sent and before it answered."""

    code = "agent_gone"
    status = 502

    def __init__(self, message: str, command_id: str) -> None:
        super().__init__(message)
        self.command_id = command_id
        self.extra = {"commandId": command_id}


class ClusterUnavailableError(TransportError):
    """Another node holds the agent, and Redis cannot carry the command to it now."""

    code = "cluster_unavailable"
    status = 503


class StateUnavailableError(TransportError):
    """The command could not be recorded durably (the state database is failing)."""

    code = "state_unavailable"
    status = 503


class CommandConflictError(TransportError):
    """The command's record says no (it already ended, or another node runs it)."""

    status = 409

    def __init__(self, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.code = code
        self.extra = extra


class UnknownCommandError(TransportError):
    """No record of this command id."""

    code = "unknown_command"
    status = 404


class ShuttingDownError(TransportError):
    status = 503
    code = "shutting_down"


class Transport(Protocol):
    """One way of reaching agents; the monitoring module picks one per agent."""

    name: str

    async def can_reach(self, agent_id: str, command: str) -> bool:
        """Whether this transport can deliver ``command`` to ``agent_id`` right now."""
        ...

    async def send_command(self, order: CommandOrder) -> CommandOutcome:
        """Run the order's command on its agent and wait for the result (a transport that
        keeps records names ``order.requester`` in them).

        Raises a ``TransportError`` subclass when there is no result.
        """
        ...

    def health(self) -> dict[str, Any]:
        """A cheap status for operators: ``{"ok": bool, ...}`` (no network calls)."""
        ...


@attrs.frozen
class AgentListing:
    """An agent a transport knows, reachable now (``connected``) or last seen then."""

    agent_id: str
    connected: bool
    #: When it was last connected or answering (ms since the epoch), if known.
    last_seen_ms: int | None = None
    #: What else the transport knows (hostname, version, node...), as JSON.
    details: Mapping[str, Any] = attrs.field(factory=dict)
    #: The labels the agent reports through this transport (its settings, an instance's
    #: tags); None when the transport does not know them now.
    labels: Mapping[str, str] | None = None


@runtime_checkable
class ListsAgents(Transport, Protocol):
    """A transport that can say which agents it knows (optional)."""

    async def list_agents(self) -> Sequence[AgentListing]:
        """Every agent it knows, connected or not (bounded by what it remembers)."""
        ...

    async def describe_agent(self, agent_id: str) -> AgentListing | None:
        """What it knows of one agent, or None."""
        ...


@runtime_checkable
class KnowsSessions(Transport, Protocol):
    """A transport that remembers agents' recent sessions (optional)."""

    async def sessions(self, agent_id: str) -> Sequence[Mapping[str, Any]]:
        """The agent's recent sessions on this node, newest first (JSON objects)."""
        ...


@runtime_checkable
class KeepsRecords(Transport, Protocol):
    """A transport that keeps its own command records and can send without waiting
    (optional; the host keeps records for the others)."""

    async def submit_command(self, order: CommandOrder) -> tuple[str, str]:
        """Send without waiting; the command's id and state once its record is durable."""
        ...

    async def command_record(self, command_id: str) -> dict[str, Any] | None:
        """The record as JSON, or None when this transport has none."""
        ...

    async def list_records(self, query: RecordQuery) -> list[dict[str, Any]]:
        """A page of its records (JSON), newest first (``GET /api/commands``)."""
        ...

    async def cancel_command(self, command_id: str) -> dict[str, Any]:
        """Cancel it; the record after. Raises ``UnknownCommandError`` or
        ``CommandConflictError`` (it ended, or another node runs it)."""
        ...


@runtime_checkable
class KeepsOutput(KeepsRecords, Protocol):
    """A transport that keeps commands' output as it comes (optional; for the others a
    command's output is its result's ``stdout`` and ``stderr``)."""

    async def command_output(
        self, command_id: str, after: int, limit: int
    ) -> list[dict[str, Any]] | None:
        """Up to ``limit`` chunks numbered above ``after`` (``output`` lines of docs/api.md,
        "Command output"); None when it keeps no output of this command here."""
        ...

    def watch_output(self, command_ids: Sequence[str]) -> OutputWatch:
        """Watch the commands from now on: the watch's ``wait`` returns once one of them
        has news (a chunk, its record changed) since the watch began. Open it before
        reading, so news that comes while the reader works is not missed."""
        ...


class OutputWatch(Protocol):
    """News of some commands' output since the watch began (``KeepsOutput``)."""

    async def wait(self, timeout_s: float) -> None:
        """Return at once if there was news, else at the next, or after ``timeout_s``."""
        ...

    def close(self) -> None:
        """Stop watching."""
        ...


@runtime_checkable
class SendsBatches(Transport, Protocol):
    """A transport that sends one command to several agents in one call (optional: SSM's
    SendCommand takes up to 50 instances); a job uses it for the agents it reaches."""

    #: The most orders one ``send_batch`` takes.
    max_batch: int

    async def send_batch(
        self, orders: Sequence[CommandOrder]
    ) -> list[CommandOutcome | TransportError]:
        """Orders of one command (the same command, arguments and timeout) to different
        agents, sent together; each answered on its own, in order. A failure that proves
        an order never left is one of ``NOT_DELIVERED``'s errors."""
        ...
