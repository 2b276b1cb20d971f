"""``WebSocketTransport``: commands over the gateway's live agent connections, the
records it keeps of them, and the agents it knows (the ``websocket`` plugin's transport)."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from ..protocol import random_nonce
from ..transports import (
    AgentListing,
    AgentNotConnectedError,
    CommandConflictError,
    CommandNotSupportedError,
    CommandOrder,
    CommandOutcome,
    ShuttingDownError,
    StateUnavailableError,
    UnknownCommandError,
)
from ..transports.channels import Channel, ChannelRefusedError
from .output import OutputNews
from .store import StoreError

if TYPE_CHECKING:
    from ..transports.records import CommandRecord, RecordQuery
    from .connection import AgentConnection
    from .gateway import Gateway

__all__ = ["WebSocketTransport"]


class WebSocketTransport:
    """Reaches agents connected to this gateway node."""

    name = "websocket"

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def can_reach(self, agent_id: str, command: str) -> bool:
        connection = self.gateway.registry.local(agent_id)
        if connection is not None:
            return connection.offers(command)
        if self.gateway.remote is None:
            return False
        info = await self.gateway.registry.lookup(agent_id)  # held by another node?
        return info is not None and command in info.commands

    def health(self) -> dict[str, Any]:
        view = self.gateway.view
        return {
            "ok": not view.shutting_down,
            "connections": view.open_connections,
            "commandsInFlight": view.commands_in_flight,
            "shuttingDown": view.shutting_down,
        }

    async def send_command(self, order: CommandOrder) -> CommandOutcome:
        """Through this node's connection, or (in a cluster) the node that holds the agent."""
        node = await self._holder(order.agent_id, order.command)
        if node is not None and self.gateway.remote is not None:
            return await self.gateway.remote.send(node, order)
        return await self.send_here(order)

    async def submit_command(self, order: CommandOrder) -> tuple[str, str]:
        """Send without waiting, here or on the node that holds the agent; the command's id
        and state once its record is on that node's disk."""
        node = await self._holder(order.agent_id, order.command)
        if node is not None and self.gateway.remote is not None:
            accepted = await self.gateway.remote.submit(node, order)
            return str(accepted["commandId"]), str(accepted["state"])
        return await self.submit_here(order)

    async def submit_here(self, order: CommandOrder) -> tuple[str, str]:
        """Send through this node's connection without waiting; id and state once the
        record is on disk."""
        record = await self._held(order) or self.submit(order)
        try:
            await self.gateway.spool.durable()
        except StoreError as exc:
            # The command was sent; only its record may be missing after a crash.
            raise StateUnavailableError(f"{exc}; the command was sent") from None
        return record.command_id, record.state.value

    async def command_record(self, command_id: str) -> dict[str, Any] | None:
        record = await self.gateway.commands.get(command_id)
        return None if record is None else record.to_json()

    async def command_output(
        self, command_id: str, after: int, limit: int
    ) -> list[dict[str, Any]] | None:
        """Chunks of a command this node sent with ``streamOutput``, above ``after``; None
        for one sent without (its output is in its result) or by another node."""
        record, node = await self.gateway.commands.locate(command_id)
        if record is None or node is not None or not record.stream_output:
            return None
        rows = await self.gateway.output.read(command_id, after, limit)
        return [row.to_json() for row in rows]

    def watch_output(self, command_ids: Sequence[str]) -> OutputNews:
        return self.gateway.output.watch(command_ids)

    async def list_records(self, query: RecordQuery) -> list[dict[str, Any]]:
        """This node's records, or in a cluster every node's (their copies in Redis)."""
        with contextlib.suppress(StoreError):  # what was just sent is on disk first
            await self.gateway.spool.durable()
        shared = self.gateway.records
        if shared is not None:
            everyone = await shared.history(query)
            if everyone is not None:
                return everyone
        return await self.gateway.store.list_commands(query)

    async def cancel_command(self, command_id: str) -> dict[str, Any]:
        """Cancel a command this node runs (the agent is told when it speaks ``cancel``)."""
        commands = self.gateway.commands
        record, node = await commands.locate(command_id)
        if record is None:
            raise UnknownCommandError(f"no record of command {command_id}")
        if node is not None and record.finished_ms is None:
            raise CommandConflictError(
                "command_elsewhere",
                f"command {command_id} runs on node {node}: send the DELETE to that node",
                node=node,
            )
        if record.finished_ms is not None:
            raise CommandConflictError(
                "command_finished",
                f"command {command_id} already ended: {record.state.value}",
                command=record.to_json(),
            )
        cancelled = await commands.cancel(command_id)
        assert cancelled is not None  # noqa: S101 - it was live a moment ago
        return cancelled.to_json()

    async def list_agents(self) -> list[AgentListing]:
        """Connected agents (every node's, in a cluster), then those seen before."""
        gateway = self.gateway
        stale = gateway.staleness.stale
        listed = {}
        for info in await gateway.registry.list():
            details = info.to_json()
            details["stale"] = info.agent_id in stale
            labels = details["labels"]
            listed[info.agent_id] = AgentListing(
                info.agent_id, True, info.last_seen_ms, details, labels
            )
        seen = await gateway.last_seen.all()
        for agent_id, left_ms in (await gateway.registry.left()).items():  # other nodes'
            seen[agent_id] = max(seen.get(agent_id, 0), left_ms)
        for agent_id, seen_ms in seen.items():
            if agent_id not in listed:
                listed[agent_id] = AgentListing(agent_id, False, seen_ms)
        return [listed[agent_id] for agent_id in sorted(listed)]

    async def sessions(self, agent_id: str) -> list[dict[str, Any]]:
        """The agent's last sessions on this node since it started, newest first."""
        return list(self.gateway.history.of(agent_id))

    async def describe_agent(self, agent_id: str) -> AgentListing | None:
        info = await self.gateway.registry.lookup(agent_id)
        if info is not None:
            details = {**info.to_json(), "stale": agent_id in self.gateway.staleness.stale}
            return AgentListing(agent_id, True, info.last_seen_ms, details, dict(info.labels))
        times = [await self.gateway.last_seen.get(agent_id)]
        times += (await self.gateway.registry.left(agent_id)).values()
        known = [ms for ms in times if ms is not None]
        return AgentListing(agent_id, False, max(known)) if known else None

    async def _holder(self, agent_id: str, command: str) -> str | None:
        """The other node that holds the agent, in a cluster; None to try this one."""
        gateway = self.gateway
        if gateway.remote is None or gateway.registry.local(agent_id) is not None:
            return None
        info = await gateway.remote.locate(agent_id)
        if info is None or info.node == gateway.node:
            return None
        if gateway.live.shutting_down:
            raise ShuttingDownError("the server is shutting down")
        if command not in info.commands:
            offered = ", ".join(info.commands) or "none"
            raise CommandNotSupportedError(
                f"agent {agent_id} does not offer {command!r} (it offers: {offered})"
            )
        return info.node

    async def send_here(self, order: CommandOrder) -> CommandOutcome:
        """Through this node's own connection to the agent only."""
        return await self.gateway.commands.wait(await self._held(order) or self.submit(order))

    async def _held(self, order: CommandOrder) -> CommandRecord | None:
        """The record of an order that may have been sent before (``again``: a job carried
        on after a restart) if this node holds it: never sent twice; None to send it."""
        if order.command_id is None or not order.again:
            return None
        record = await self.gateway.commands.get(order.command_id)
        if record is not None and (record.agent_id, record.command) != (
            order.agent_id,
            order.command,
        ):
            raise CommandConflictError(
                "command_id_taken",
                f"command id {order.command_id} names another command "
                f"({record.command} to {record.agent_id})",
            )
        return record

    def submit(self, order: CommandOrder) -> CommandRecord:
        """Send now, without waiting: the record (``GET .../commands/:id``) follows it."""
        return self.gateway.commands.submit(
            self.connection_for(order.agent_id, order.command),
            order.command,
            dict(order.args),
            order.timeout_ms,
            requested_by=order.requester,
            command_id=order.command_id or random_nonce(),  # a UUID4, as the others
            stream_output=order.stream_output,
            intent=order.intent,
        )

    async def open_channel(
        self,
        agent_id: str,
        kind: str,
        params: Mapping[str, Any],
        *,
        requested_by: str | None,
        intent: Mapping[str, Any] | None = None,
    ) -> Channel:
        """A shell or tunnel to an agent connected to this node (``OpensChannels``)."""
        gateway = self.gateway
        if not gateway.config.channels:
            message = "sessions and tunnels are off on this server ([plugins.websocket] channels)"
            raise ChannelRefusedError("not_supported", message)
        connection = gateway.registry.local(agent_id)
        if connection is None or not connection.ready:
            info = None if gateway.remote is None else await gateway.registry.lookup(agent_id)
            if info is not None:
                raise ChannelRefusedError(
                    "agent_elsewhere",
                    f"agent {agent_id} is connected to node {info.node}: open sessions and "
                    'tunnels on that node (docs/sessions.md, "Cluster")',
                )
            raise ChannelRefusedError("agent_not_connected", f"agent {agent_id} is not connected")
        return await gateway.channel_opener.open(connection, kind, params, requested_by, intent)

    def connection_for(self, agent_id: str, command: str) -> AgentConnection:
        """The agent's open connection, if it can take ``command``; raises why not."""
        gateway = self.gateway
        if gateway.live.shutting_down:
            raise ShuttingDownError("the server is shutting down")
        connection = gateway.registry.local(agent_id)
        if connection is None or not connection.ready:
            raise AgentNotConnectedError(f"agent {agent_id} is not connected")
        if not connection.offers(command):
            offered = ", ".join(connection.commands) or "none"
            raise CommandNotSupportedError(
                f"agent {agent_id} does not offer {command!r} (it offers: {offered})"
            )
        return connection
