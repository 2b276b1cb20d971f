"""The host-neutral ``Transport`` interface every way of reaching an agent implements."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import attrs

__all__ = [
    "AgentGoneError",
    "AgentNotConnectedError",
    "CommandNotSupportedError",
    "CommandOutcome",
    "CommandTimeoutError",
    "ShuttingDownError",
    "Transport",
    "TransportError",
]


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


class AgentNotConnectedError(TransportError):
    code = "agent_not_connected"


class CommandNotSupportedError(TransportError):
    code = "command_not_supported"


class CommandTimeoutError(TransportError):
    """No result within the command's timeout (the command may still run)."""

    code = "command_timeout"

    def __init__(self, message: str, command_id: str) -> None:
        super().__init__(message)
        self.command_id = command_id


class AgentGoneError(TransportError):
    """The agent disconnected after the command was sent and before it answered."""

    code = "agent_gone"

    def __init__(self, message: str, command_id: str) -> None:
        super().__init__(message)
        self.command_id = command_id


class ShuttingDownError(TransportError):
    code = "shutting_down"


class Transport(Protocol):
    """One way of reaching agents; the monitoring module picks one per agent."""

    name: str

    async def can_reach(self, agent_id: str, command: str) -> bool:
        """Whether this transport can deliver ``command`` to ``agent_id`` right now."""
        ...

    async def send_command(
        self, agent_id: str, command: str, args: Mapping[str, Any], timeout_s: float
    ) -> CommandOutcome:
        """Run ``command`` on the agent and wait for its result.

        Raises a ``TransportError`` subclass when there is no result.
        """
        ...

    def health(self) -> dict[str, Any]:
        """A cheap status for operators: ``{"ok": bool, ...}`` (no network calls)."""
        ...
