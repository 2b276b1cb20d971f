"""``WebSocketTransport``: commands over the gateway's live agent connections."""

from __future__ import annotations

import math
import uuid
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from .base import (
    REQUESTER,
    AgentNotConnectedError,
    CommandNotSupportedError,
    CommandOutcome,
    ShuttingDownError,
)

if TYPE_CHECKING:
    from ..gateway.connection import AgentConnection
    from ..gateway.gateway import Gateway
    from ..gateway.records import CommandRecord

__all__ = ["WebSocketTransport"]


class WebSocketTransport:
    """Reaches agents connected to this gateway node."""

    name = "websocket"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def can_reach(self, agent_id: str, command: str) -> bool:
        connection = self.gateway.registry.local(agent_id)
        if connection is not None:
            hello = connection.session.hello
            return hello is not None and command in hello.capabilities.commands
        if self.gateway.remote is None:
            return False
        info = await self.gateway.registry.lookup(agent_id)  # held by another node?
        return info is not None and command in info.commands

    def health(self) -> dict[str, Any]:
        gateway = self.gateway
        return {
            "ok": not gateway.shutting_down,
            "connections": gateway.open_connections,
            "commandsInFlight": len(gateway.commands),
            "shuttingDown": gateway.shutting_down,
        }

    async def send_command(
        self, agent_id: str, command: str, args: Mapping[str, Any], timeout_s: float
    ) -> CommandOutcome:
        """Through this node's connection, or (in a cluster) the node that holds the agent."""
        node = await self._holder(agent_id, command)
        if node is not None and self.gateway.remote is not None:
            return await self.gateway.remote.send(node, agent_id, command, dict(args), timeout_s)
        return await self.send_here(agent_id, command, args, timeout_s)

    async def submit_anywhere(
        self, agent_id: str, command: str, args: Mapping[str, Any], timeout_s: float
    ) -> tuple[str, str]:
        """Send without waiting, here or on the node that holds the agent; the command's id
        and state once its record is on that node's disk."""
        node = await self._holder(agent_id, command)
        if node is not None and self.gateway.remote is not None:
            accepted = await self.gateway.remote.submit(
                node, agent_id, command, dict(args), timeout_s
            )
            return str(accepted["commandId"]), str(accepted["state"])
        record = self.submit(agent_id, command, args, timeout_s)
        await self.gateway.spool.durable()
        return record.command_id, record.state.value

    async def _holder(self, agent_id: str, command: str) -> str | None:
        """The other node that holds the agent, in a cluster; None to try this one."""
        gateway = self.gateway
        if gateway.remote is None or gateway.registry.local(agent_id) is not None:
            return None
        info = await gateway.remote.locate(agent_id)
        if info is None or info.node == gateway.node:
            return None
        if gateway.shutting_down:
            raise ShuttingDownError("the server is shutting down")
        if command not in info.commands:
            offered = ", ".join(info.commands) or "none"
            raise CommandNotSupportedError(
                f"agent {agent_id} does not offer {command!r} (it offers: {offered})"
            )
        return info.node

    async def send_here(
        self, agent_id: str, command: str, args: Mapping[str, Any], timeout_s: float
    ) -> CommandOutcome:
        """Through this node's own connection to the agent only."""
        return await self.gateway.commands.wait(self.submit(agent_id, command, args, timeout_s))

    def submit(
        self,
        agent_id: str,
        command: str,
        args: Mapping[str, Any],
        timeout_s: float,
    ) -> CommandRecord:
        """Send now, without waiting: the record (``GET .../commands/:id``) follows it."""
        return self.gateway.commands.submit(
            self.connection_for(agent_id, command),
            command,
            dict(args),
            max(1, math.ceil(timeout_s * 1000)),
            requested_by=REQUESTER.get(),  # set by the HTTP API around its call
            command_id=str(uuid.uuid4()),
        )

    def connection_for(self, agent_id: str, command: str) -> AgentConnection:
        """The agent's open connection, if it can take ``command``; raises why not."""
        gateway = self.gateway
        if gateway.shutting_down:
            raise ShuttingDownError("the server is shutting down")
        connection = gateway.registry.local(agent_id)
        hello = None if connection is None else connection.session.hello
        if connection is None or hello is None or connection.closing is not None:
            raise AgentNotConnectedError(f"agent {agent_id} is not connected")
        if command not in hello.capabilities.commands:
            offered = ", ".join(hello.capabilities.commands) or "none"
            raise CommandNotSupportedError(
                f"agent {agent_id} does not offer {command!r} (it offers: {offered})"
            )
        return connection
