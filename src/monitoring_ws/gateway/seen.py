"""When each agent was last connected, so that listings show who went offline."""

from __future__ import annotations

from .store import StateStore

__all__ = ["LastSeen"]


class LastSeen:
    """Read from memory, kept in the state database (written with the next commit).

    Only authenticated agents are noted, so the table is as large as the fleet."""

    def __init__(self, store: StateStore) -> None:
        self._store = store
        self._seen = store.load_seen()

    def note(self, agent_id: str, seen_ms: int) -> None:
        self._seen[agent_id] = seen_ms
        self._store.put_seen(agent_id, seen_ms)

    async def get(self, agent_id: str) -> int | None:
        return self._seen.get(agent_id)

    async def all(self) -> dict[str, int]:
        return dict(self._seen)
