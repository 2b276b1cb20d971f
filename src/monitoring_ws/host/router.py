"""``TransportRouter``: per agent and command, the first able transport in preference order."""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Sequence
from typing import Any

import attrs

from ..transports.base import (
    AgentNotConnectedError,
    CommandNotSupportedError,
    CommandOrder,
    CommandOutcome,
    ShuttingDownError,
    Transport,
    TransportError,
)

__all__ = ["Routed", "TransportRouter"]

log = logging.getLogger("monitoring_ws.router")

#: Failures that prove the command never left: the next transport may try it.
_NOT_DELIVERED = (AgentNotConnectedError, CommandNotSupportedError, ShuttingDownError)


@attrs.frozen
class Routed:
    """The transport that took a command, and what came of it: the agent's answer, or
    a failure after which the command may have run (a timeout, the agent gone)."""

    transport: str
    outcome: CommandOutcome | TransportError

    def to_json(self) -> dict[str, Any]:
        """The answer's JSON (only for an ``outcome`` that is one)."""
        assert isinstance(self.outcome, CommandOutcome)  # noqa: S101 - callers check
        return {**self.outcome.to_json(), "transport": self.transport}


class TransportRouter:
    """Picks a transport per agent; falls back only when the command was surely not delivered."""

    def __init__(self, transports: Sequence[Transport], *, remember: int = 1000) -> None:
        if not transports:
            raise ValueError("a router needs at least one transport")
        self.transports = tuple(transports)
        #: The last commands routed: which transport served which command (newest last).
        self.served: deque[dict[str, Any]] = deque(maxlen=remember)

    async def reachability(self, agent_id: str, command: str = "ping") -> dict[str, bool]:
        return {t.name: await t.can_reach(agent_id, command) for t in self.transports}

    def named(self, name: str) -> Transport:
        """The transport called ``name``; KeyError when there is none."""
        for transport in self.transports:
            if transport.name == name:
                return transport
        raise KeyError(name)

    async def send_command(self, order: CommandOrder) -> Routed:
        """The first transport that reaches the agent runs the order. Raises
        ``AgentNotConnectedError`` or ``CommandNotSupportedError`` when none took it;
        returns any other failure in ``Routed`` (the command may have run)."""
        agent_id, command = order.agent_id, order.command
        refused: list[str] = []
        unsupported = False
        for transport in self.transports:
            if not await transport.can_reach(agent_id, command):
                explain = getattr(transport, "refusal", None)  # optional: why not
                reason = explain(agent_id, command) if explain is not None else None
                refused.append(f"{transport.name}: {reason or 'cannot reach it'}")
                continue
            try:
                outcome = await transport.send_command(order)
            except _NOT_DELIVERED as exc:
                log.info(
                    "%s could not deliver %s to %s: %s", transport.name, command, agent_id, exc
                )
                refused.append(f"{transport.name}: {exc}")
                unsupported = unsupported or isinstance(exc, CommandNotSupportedError)
                continue
            except TransportError as exc:
                # Maybe delivered (timeout, agent gone mid-command): never run it twice.
                self._record(agent_id, command, transport.name, None)
                return Routed(transport.name, exc)
            self._record(agent_id, command, transport.name, outcome)
            return Routed(transport.name, outcome)
        message = f"no transport reaches {agent_id} for {command!r} ({'; '.join(refused)})"
        # A transport that reached the agent and refused the command is the better answer.
        raise (CommandNotSupportedError if unsupported else AgentNotConnectedError)(message)

    def _record(
        self, agent_id: str, command: str, transport: str, outcome: CommandOutcome | None
    ) -> None:
        self.served.append(
            {
                "at": time.time_ns() // 1_000_000,
                "agentId": agent_id,
                "command": command,
                "transport": transport,
                "commandId": None if outcome is None else outcome.command_id,
                "ok": None if outcome is None else outcome.ok,
            }
        )
