"""Who is connected: agentId -> live connection and metadata. The gateway holds one (in
memory, or the cluster's Redis-backed one); both meet here, not in each other."""

from __future__ import annotations

from typing import Any, Generic, Protocol, TypeVar

import attrs

__all__ = ["AgentInfo", "C", "LiveConnection", "MemoryRegistry", "Registry"]


@attrs.frozen
class AgentInfo:
    """What the API shows of a connected agent."""

    agent_id: str
    session_id: str
    hostname: str
    instance_id: str | None
    agent_version: str
    commands: tuple[str, ...]
    features: tuple[str, ...]
    remote_address: str
    connected_at_ms: int
    last_seen_ms: int
    node: str
    #: The labels the agent reported (sorted pairs).
    labels: tuple[tuple[str, str], ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "agentId": self.agent_id,
            "connected": True,
            "sessionId": self.session_id,
            "hostname": self.hostname,
            "instanceId": self.instance_id,
            "agentVersion": self.agent_version,
            "capabilities": {"commands": list(self.commands), "features": list(self.features)},
            "remoteAddress": self.remote_address,
            "connectedAt": self.connected_at_ms,
            "lastSeen": self.last_seen_ms,
            "node": self.node,
            "labels": dict(self.labels),
        }


class LiveConnection(Protocol):
    """What the registry needs of a connection."""

    @property
    def agent_id(self) -> str: ...

    def info(self) -> AgentInfo: ...

    def replace(self) -> None:
        """Close with 4409: a newer connection of the same agent took over."""
        ...


C = TypeVar("C", bound=LiveConnection)


class Registry(Protocol[C]):
    """Live sessions by agentId; the newest connection of an agent wins (4409 to the older)."""

    async def register(self, connection: C) -> None: ...

    async def unregister(self, connection: C) -> None: ...

    def local(self, agent_id: str) -> C | None:
        """The connection held by this node, if any."""
        ...

    def connections(self) -> list[C]:
        """Every connection this node holds."""
        ...

    async def lookup(self, agent_id: str) -> AgentInfo | None: ...

    async def list(self) -> list[AgentInfo]: ...

    async def left(self, agent_id: str | None = None) -> dict[str, int]:
        """When agents that left other nodes were last connected (ms), one or all; a single
        node knows only its own (the gateway's ``LastSeen``)."""
        ...


class MemoryRegistry(Generic[C]):
    """The single-node registry."""

    def __init__(self) -> None:
        self._live: dict[str, C] = {}

    def __len__(self) -> int:
        return len(self._live)

    async def register(self, connection: C) -> None:
        previous = self._live.get(connection.agent_id)
        self._live[connection.agent_id] = connection
        if previous is not None and previous is not connection:
            previous.replace()

    async def unregister(self, connection: C) -> None:
        if self._live.get(connection.agent_id) is connection:
            del self._live[connection.agent_id]

    def local(self, agent_id: str) -> C | None:
        return self._live.get(agent_id)

    def connections(self) -> list[C]:
        return list(self._live.values())

    async def lookup(self, agent_id: str) -> AgentInfo | None:
        connection = self._live.get(agent_id)
        return None if connection is None else connection.info()

    async def list(self) -> list[AgentInfo]:
        return [connection.info() for connection in self._live.values()]

    async def left(self, agent_id: str | None = None) -> dict[str, int]:
        return {}
