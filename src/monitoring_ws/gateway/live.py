"""The agent connections open on this node, authenticated or not, and how they end
together: revoked, or closed with 1001 at shutdown."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Protocol

import trio

__all__ = ["LiveConnection", "LiveConnections"]


class LiveConnection(Protocol):
    """What closing a connection from outside takes (``AgentConnection``)."""

    @property
    def agent_id(self) -> str: ...

    def revoke(self) -> None: ...

    def shutdown(self, retry_after_s: int) -> None: ...


class LiveConnections:
    """Every open socket on ``/agent`` from its accept to the end of its cleanup."""

    __slots__ = ("_none_open", "_open", "shutting_down")

    def __init__(self) -> None:
        self._open: set[LiveConnection] = set()
        #: Set while no connection is open (``wait_closed`` waits for it).
        self._none_open = trio.Event()
        self._none_open.set()
        #: Set by ``shutdown``: new sockets are refused with 1001 from then on.
        self.shutting_down = False

    def __len__(self) -> int:
        return len(self._open)

    def __iter__(self) -> Iterator[LiveConnection]:
        return iter(list(self._open))  # a copy: closing one changes the set

    def opened(self, connection: LiveConnection) -> None:
        self._open.add(connection)
        if self._none_open.is_set():
            self._none_open = trio.Event()

    def ended(self, connection: LiveConnection) -> None:
        """Called once its cleanup is done: a shutdown waits for the last one."""
        self._open.discard(connection)
        if not self._open:
            self._none_open.set()

    def close_revoked(self, agent_ids: frozenset[str]) -> int:
        """Close (4401) the sessions of these agents; how many were open."""
        closed = 0
        for connection in self:
            if connection.agent_id in agent_ids:
                connection.revoke()
                closed += 1
        return closed

    def shutdown(self, retry_after_s: int) -> None:
        """Refuse new sockets and close every open one with 1001 and a retry hint."""
        self.shutting_down = True
        for connection in self:
            connection.shutdown(retry_after_s)

    async def wait_closed(self, timeout_s: float) -> None:
        """Wait (bounded) until every connection has ended."""
        with trio.move_on_after(timeout_s):
            await self._none_open.wait()
