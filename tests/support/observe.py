"""What a test reads of a running server, through its API (not its insides)."""

from __future__ import annotations

from collections import defaultdict

import httpx

__all__ = ["connected", "counters", "open_connections_now"]


async def _stats(api_url: str) -> dict[str, object]:
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        answer = await http.get("/api/websocket/stats")
        assert answer.status_code == 200, answer.text
        stats: dict[str, object] = answer.json()
        return stats


async def counters(api_url: str) -> defaultdict[str, int]:
    """The gateway's counters (``GET /api/websocket/stats``); one never counted is 0."""
    found = (await _stats(api_url))["counters"]
    assert isinstance(found, dict)
    return defaultdict(int, found)


async def open_connections_now(api_url: str) -> int:
    """Agent sockets the gateway holds, authenticated or not."""
    count = (await _stats(api_url))["openConnections"]
    assert isinstance(count, int)
    return count


async def connected(api_url: str, agent_id: str) -> bool:
    """Whether the agent is connected (``GET /api/websocket/agents/:agentId``)."""
    async with httpx.AsyncClient(base_url=api_url, timeout=10) as http:
        status = (await http.get(f"/api/websocket/agents/{agent_id}")).json()
        return bool(status["connected"])
