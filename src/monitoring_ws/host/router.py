"""``TransportRouter``: per agent and command, the first able transport in preference order."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from ..configbase import ConfigError
from ..transports.base import (
    AgentNotConnectedError,
    CommandNotSupportedError,
    CommandOrder,
    CommandOutcome,
    ShuttingDownError,
    Transport,
    TransportError,
)

if TYPE_CHECKING:
    from .config import TransportSettings
    from .plugins import Plugin

__all__ = [
    "NOT_DELIVERED",
    "Routed",
    "TransportRouter",
    "send_through",
    "transports_in_order",
]

log = logging.getLogger("monitoring_ws.router")

#: Failures that prove the command never left: the next transport may try it.
NOT_DELIVERED = (AgentNotConnectedError, CommandNotSupportedError, ShuttingDownError)


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

    def __init__(self, transports: Sequence[Transport]) -> None:
        if not transports:
            raise ValueError("a router needs at least one transport")
        self.transports = tuple(transports)

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
                return await send_through(transport, order)
            except NOT_DELIVERED as exc:
                log.info(
                    "%s could not deliver %s to %s: %s", transport.name, command, agent_id, exc
                )
                refused.append(f"{transport.name}: {exc}")
                unsupported = unsupported or isinstance(exc, CommandNotSupportedError)
        message = f"no transport reaches {agent_id} for {command!r} ({'; '.join(refused)})"
        # A transport that reached the agent and refused the command is the better answer.
        raise (CommandNotSupportedError if unsupported else AgentNotConnectedError)(message)


async def send_through(transport: Transport, order: CommandOrder) -> Routed:
    """``transport`` runs the order. Raises the failures that prove it never left
    (``NOT_DELIVERED``); returns any other in ``Routed``: the command may have run (a
    timeout, the agent gone mid-command), so it is never sent again."""
    try:
        return Routed(transport.name, await transport.send_command(order))
    except NOT_DELIVERED:
        raise
    except TransportError as exc:
        return Routed(transport.name, exc)


def transports_in_order(
    plugins: Sequence[Plugin], settings: TransportSettings
) -> tuple[Transport, ...]:
    """The enabled plugins' transports (``ssm`` among them when ``[transports] ssm =
    true``), in ``order``; the rest after."""
    available: dict[str, Transport] = {}
    for plugin in plugins:
        for transport in plugin.transports():
            available[transport.name] = transport
    unknown = sorted(set(settings.order) - set(available) - {"websocket", "ssm"})
    if unknown:
        offered = ", ".join(sorted({"websocket", "ssm", *available}))
        raise ConfigError(
            f"[transports] order names {', '.join(unknown)}, which no enabled plugin "
            f"provides (known: {offered})"
        )
    order = list(settings.order) + [name for name in available if name not in settings.order]
    return tuple(available[name] for name in order if name in available)
