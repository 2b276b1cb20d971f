"""In a cluster any node shows every agent: its latest metrics whichever node holds it, and
when it left, whichever node it left."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import coredis
import httpx
import trio

from ..conftest import StartServer
from ..gateway.agents import now_ms, open_agent
from ..support.eventually import eventually
from .helpers import serving_agent, start_node


async def test_any_node_reads_an_agents_latest_metrics(
    start_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "a")
    node_b = await start_node(start_server, tmp_path, redis_url, "b")
    async with open_agent(node_a.agent_urls[0], "agent-far") as agent:
        await agent.send(agent.session.metrics({"cpu": {"percent": 42.0}}, now_ms()))
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()
        async with httpx.AsyncClient(base_url=node_b.api_url) as http:

            async def with_metrics() -> dict[str, Any] | None:
                status: dict[str, Any] = (await http.get("/api/agents/agent-far")).json()
                return status if status["metrics"] is not None else None

            status = await eventually(with_metrics, timeout_s=5, what="node b reads the metrics")
            assert status["metrics"]["values"] == {"cpu": {"percent": 42.0}}
            assert status["connected"] is True
            websocket = (await http.get("/api/websocket/agents/agent-far")).json()
            assert websocket["metrics"]["values"] == {"cpu": {"percent": 42.0}}
            # The fleet table's summary: every agent's at once (one MGET), from either node.
            fleet = (await http.get("/api/agents", params={"metrics": "summary"})).json()
            [far] = [entry for entry in fleet["agents"] if entry["agentId"] == "agent-far"]
            assert far["metrics"]["cpu"] == 42.0
    # What is in Redis is sealed: a value written there by anyone else is not believed.
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        await client.set("mws:metrics:agent-forged", '{"m": {"agentId": "agent-forged"}}')
    async with httpx.AsyncClient(base_url=node_b.api_url) as http:
        assert (await http.get("/api/agents/agent-forged")).json()["metrics"] is None
        summaries = await node_b.running.telemetry.latest_many(["agent-forged", "agent-far"])
        assert set(summaries) <= {"agent-far"}  # the forged value is not believed


async def test_any_node_lists_an_agent_that_left_another(
    start_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "a")
    node_b = await start_node(start_server, tmp_path, redis_url, "b")
    async with open_agent(node_a.agent_urls[0], "agent-left"):
        pass
    async with httpx.AsyncClient(base_url=node_b.api_url) as http:

        async def listed() -> dict[str, Any] | None:
            listing: dict[str, Any] = (await http.get("/api/agents")).json()
            return listing if listing["agents"] else None

        listing = await eventually(listed, timeout_s=5, what="node b lists the agent")
        [agent] = listing["agents"]
        assert agent["agentId"] == "agent-left"
        assert agent["connected"] is False
        assert isinstance(agent["lastSeen"], int)
        one = (await http.get("/api/agents/agent-left")).json()
        assert one["lastSeen"] == agent["lastSeen"]
    # A departure written into Redis by anyone else is not believed.
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        await client.hset("mws:left", {"agent-ghost": '{"m": {"agentId": "agent-ghost"}}'})
    async with httpx.AsyncClient(base_url=node_b.api_url) as http:
        listed = [a["agentId"] for a in (await http.get("/api/agents")).json()["agents"]]
        assert listed == ["agent-left"]


async def test_any_node_lists_every_nodes_command_history(
    start_server: StartServer, tmp_path: Path, redis_url: str, nursery: trio.Nursery
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "a")
    node_b = await start_node(start_server, tmp_path, redis_url, "b")
    await nursery.start(serving_agent, node_a.agent_urls[0], "on-a")
    await nursery.start(serving_agent, node_b.agent_urls[0], "on-b")
    ping = {"command": "ping", "args": {}}
    sent = []
    async with httpx.AsyncClient(base_url=node_a.api_url, timeout=30) as a:
        async with httpx.AsyncClient(base_url=node_b.api_url, timeout=30) as b:
            sent.append((await a.post("/api/agents/on-a/commands", json=ping)).json()["commandId"])
            sent.append((await b.post("/api/agents/on-b/commands", json=ping)).json()["commandId"])

        async def _done() -> bool:
            return len((await a.get("/api/commands")).json()["commands"]) >= 2

        await eventually(_done, timeout_s=5)  # node b's copy reaches Redis with its next commit
        seen, params = [], {"limit": 1}
        for _ in range(5):
            page = (await a.get("/api/commands", params=params)).json()
            seen += [(r["commandId"], r["node"]) for r in page["commands"]]
            if page["next"] is None:
                break
            params["cursor"] = page["next"]
        assert seen == [(sent[1], "b"), (sent[0], "a")]
        only_b = (await a.get("/api/commands", params={"agentId": "on-b"})).json()["commands"]
        assert [r["commandId"] for r in only_b] == [sent[1]]
