"""/api/agents lists every agent once: connected ones, and those that went offline with
when they were last seen (kept across a restart)."""

from __future__ import annotations

import httpx
import trio

from ..conftest import StartServer
from ..support.eventually import eventually
from .agents import open_agent


async def test_agents_that_left_are_listed_offline_with_last_seen(
    start_server: StartServer,
) -> None:
    first = await start_server()
    async with httpx.AsyncClient(base_url=first.api_url) as http:
        async with (
            open_agent(first.agent_urls[0], "agent-gone"),
            open_agent(first.agent_urls[0], "agent-here"),
        ):
            listing = (await http.get("/api/agents")).json()
            assert [a["agentId"] for a in listing["agents"]] == ["agent-gone", "agent-here"]
            assert all(a["connected"] for a in listing["agents"])
            assert listing["agents"][0]["details"]["websocket"]["hostname"] == "host-agent-gone"

        async def _done() -> bool:  # both: the second's leaving is recorded before the stop
            agents = (await http.get("/api/agents")).json()["agents"]
            return not any(agent["connected"] for agent in agents)

        await eventually(_done, timeout_s=5)
        gone = (await http.get("/api/agents")).json()["agents"][0]
        assert gone == {
            "agentId": "agent-gone",
            "connected": False,
            "lastSeen": gone["lastSeen"],
            "transports": {"websocket": False},
            "details": {"websocket": {"connected": False, "lastSeen": gone["lastSeen"]}},
            "labels": {},
            "agentLabels": {},
            "operatorLabels": {},
        }
        assert isinstance(gone["lastSeen"], int)
    first.stop()
    with trio.fail_after(10):
        await first.gateway.closed.wait()  # its last commit is made
    second = await start_server()  # the same state directory
    async with httpx.AsyncClient(base_url=second.api_url) as http:
        listing = (await http.get("/api/agents")).json()
        assert {a["agentId"]: a["lastSeen"] for a in listing["agents"]} == {
            "agent-gone": gone["lastSeen"],
            "agent-here": listing["agents"][1]["lastSeen"],
        }
        one = (await http.get("/api/agents/agent-gone")).json()
        assert one["connected"] is False
        assert one["lastSeen"] == gone["lastSeen"]
        assert one["transports"] == {"websocket": False}
