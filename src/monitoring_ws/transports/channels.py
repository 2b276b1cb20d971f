"""Channels: shells and tunnels to an agent, for transports that carry them (optional;
the websocket transport does with the ``channels`` extension, SSM does not here)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, runtime_checkable

__all__ = ["Channel", "ChannelEnded", "ChannelRefusedError", "OpensChannels"]


class ChannelRefusedError(Exception):
    """The channel did not open. ``code``: ``agent_not_connected``, ``not_supported`` (the
    agent did not negotiate channels), ``too_many_channels``, ``timeout``, or the agent's
    close reason (``refused``, ``timeout``, ``limit``, ``error``); ``message`` says why."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class ChannelEnded(Exception):
    """The channel closed: why (a close reason of docs/protocol.md 11.6), the agent's
    message, and a shell's exit status."""

    def __init__(self, reason: str, message: str = "", exit_code: int | None = None) -> None:
        super().__init__(reason, message, exit_code)
        self.reason = reason
        self.message = message
        self.exit_code = exit_code


class Channel(Protocol):
    """One open channel, as the operator's side uses it."""

    @property
    def agent_id(self) -> str: ...

    @property
    def kind(self) -> str: ...

    @property
    def bytes_in(self) -> int:
        """Bytes the agent sent."""
        ...

    @property
    def bytes_out(self) -> int:
        """Bytes sent to the agent."""
        ...

    async def receive(self) -> bytes:
        """The agent's next bytes; b"" once it sent its end of data. Raises
        ``ChannelEnded`` when the channel closed (read everything before it first)."""
        ...

    async def send(self, data: bytes) -> None:
        """Send ``data`` as the agent's window allows (waits for grants)."""
        ...

    async def send_eof(self) -> None:
        """This side's end of data (a tunnel half-closes its TCP connection)."""
        ...

    def resize(self, cols: int, rows: int) -> None:
        """A shell's new terminal size."""
        ...

    async def aclose(self, reason: str = "closed", message: str = "") -> None:
        """Close the channel (idempotent)."""
        ...


@runtime_checkable
class OpensChannels(Protocol):
    """A transport that opens channels to its agents."""

    async def open_channel(
        self,
        agent_id: str,
        kind: str,
        params: Mapping[str, Any],
        *,
        requested_by: str | None,
        intent: Mapping[str, Any] | None = None,
    ) -> Channel:
        """Open a channel and wait for the agent's answer (``intent``: the operator's
        signed intent, relayed unchanged); ``ChannelRefusedError`` when it does not open."""
        ...
