"""Commands through any node to an agent another node holds; Redis lost and back."""

from __future__ import annotations

import base64
import json
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from monitoring_ws.protocol.ed25519 import public_key
from monitoring_ws.protocol.intent import Intent, sign_intent

from ..conftest import RedisProcess, StartServer
from ..gateway.agents import open_agent
from ..support.eventually import eventually
from ..support.inprocess import connected_agent
from .helpers import start_node


async def test_a_command_through_one_node_reaches_an_agent_on_another(
    start_server: StartServer, tmp_path: Path, redis_url: str, nursery: trio.Nursery
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    async with open_agent(node_b.agent_urls[0], "far") as agent:
        nursery.start_soon(agent.serve_commands)
        async with httpx.AsyncClient(base_url=node_a.api_url, timeout=30) as http:
            response = await http.post(
                "/api/websocket/agents/far/command",
                json={"command": "ping", "args": {"n": 1}, "requestedBy": "ops"},
            )
            assert response.status_code == 200, response.text
            answer = response.json()
            assert answer["ok"] is True
            assert answer["result"] == {"n": 1}
            neutral = await http.post("/api/agents/far/commands", json={"command": "ping"})
            assert neutral.status_code == 200, neutral.text
            assert neutral.json()["transport"] == "websocket"
            unknown = await http.post("/api/websocket/agents/far/command", json={"command": "x"})
            assert unknown.status_code == 400
            assert unknown.json()["error"]["code"] == "command_not_supported"
        # The node holding the agent keeps the record, naming the node that asked.
        async with httpx.AsyncClient(base_url=node_b.api_url) as http:
            record = (await http.get(f"/api/websocket/commands/{answer['commandId']}")).json()
    assert record["state"] == "succeeded"
    assert record["requestedBy"]["address"] == "127.0.0.1 via node-a"
    assert record["requestedBy"]["label"] == "ops"


async def test_no_answer_from_the_other_node_is_504(
    start_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    async with (
        open_agent(node_b.agent_urls[0], "mute"),  # never answers
        httpx.AsyncClient(base_url=node_a.api_url, timeout=30) as http,
    ):
        response = await http.post(
            "/api/websocket/agents/mute/command", json={"command": "ping", "timeoutMs": 300}
        )
    assert response.status_code == 504
    assert response.json()["error"]["code"] == "command_timeout"


async def test_redis_lost_fails_cross_node_commands_fast_and_recovers(
    start_server: StartServer, tmp_path: Path, redis_server: RedisProcess, nursery: trio.Nursery
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_server.url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_server.url, "node-b")
    async with (
        open_agent(node_a.agent_urls[0], "near") as near,
        open_agent(node_b.agent_urls[0], "far") as far,
        httpx.AsyncClient(base_url=node_a.api_url, timeout=30) as http,
    ):
        nursery.start_soon(near.serve_commands)
        nursery.start_soon(far.serve_commands)
        body = {"command": "ping", "args": {}}
        assert (await http.post("/api/websocket/agents/far/command", json=body)).status_code == 200
        await trio.to_thread.run_sync(redis_server.stop)
        # Local agents keep working...
        assert (await http.post("/api/websocket/agents/near/command", json=body)).status_code == 200
        # ...and a command for another node's agent fails at once with a clear 503.
        with trio.fail_after(5):
            lost = await http.post("/api/websocket/agents/far/command", json=body)
        assert lost.status_code == 503, lost.text
        assert lost.json()["error"]["code"] == "cluster_unavailable"
        await trio.to_thread.run_sync(redis_server.start)

        async def through() -> bool:  # presence is refreshed and the channel resubscribed
            sent = await http.post("/api/websocket/agents/far/command", json=body)
            return sent.status_code == 200

        await eventually(through, timeout_s=20, what="commands through node-a again")


async def test_async_commands_and_records_through_any_node(
    start_server: StartServer, tmp_path: Path, redis_url: str, nursery: trio.Nursery
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    async with (
        open_agent(node_b.agent_urls[0], "far") as far,
        httpx.AsyncClient(base_url=node_a.api_url, timeout=30) as http,
    ):
        response = await http.post(
            "/api/websocket/agents/far/command", json={"command": "ping", "wait": False}
        )
        assert response.status_code == 202, response.text
        location = response.headers["Location"]

        # Not answered yet: it runs on node-b, so only node-b can cancel it.
        async def _done() -> bool:
            return (await http.get(location)).status_code == 200

        await eventually(_done, timeout_s=5)  # the holder's commit mirrors the record to Redis
        refused = await http.delete(location, headers={"Content-Type": "application/json"})
        assert refused.status_code == 409
        assert refused.json()["error"]["code"] == "command_elsewhere"
        assert refused.json()["error"]["node"] == "node-b"
        nursery.start_soon(far.serve_commands)

        async def ended() -> dict[str, Any] | None:  # any node reads the record as it ends
            record: dict[str, Any] = (await http.get(location)).json()
            return record if record["state"] == "succeeded" else None

        record = await eventually(ended, timeout_s=10, what="the record succeeded")
    assert record["transport"] == "websocket"
    assert record["requestedBy"]["address"] == "127.0.0.1 via node-a"


async def test_a_shell_asked_of_a_node_without_the_agent_names_the_node_that_has_it(
    start_server: StartServer, tmp_path: Path, redis_url: str, nursery: trio.Nursery
) -> None:
    """Channels are not relayed between nodes (docs/sessions.md, "Cluster"): the node
    asked says which node holds the agent."""
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    async with open_agent(node_b.agent_urls[0], "far") as agent:
        nursery.start_soon(agent.serve_commands)
        url = node_a.api_url.replace("http://", "ws://") + "/api/agents/far/channel?kind=shell"
        with trio.fail_after(30):
            async with open_websocket_url(url) as ws:
                refused = json.loads(await ws.get_message())
    assert refused["type"] == "refused"
    assert refused["code"] == "agent_elsewhere"
    assert "node node-b" in refused["message"]


async def test_a_signed_command_crosses_nodes_unchanged(
    start_server: StartServer, tmp_path: Path, redis_url: str, nursery: trio.Nursery
) -> None:
    """The operator's intent travels through node A and Redis to the node holding the
    agent, which relays it as it was signed: the agent (signatures required) runs it."""
    seed = bytes([7]) * 32
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    await connected_agent(
        nursery,
        node_b.agent_urls[0],
        "far",
        tmp_path / "far",
        operatorKeys=["ed25519:" + base64.b64encode(public_key(seed)).decode()],
        requireOperatorSignature=True,
    )
    now = int(time.time() * 1000)
    intent = Intent("ping", {}, ("far",), now, now + 60_000, "crossing-nodes-0001")
    signed = sign_intent(intent, [seed]).to_json()
    async with httpx.AsyncClient(base_url=node_a.api_url, timeout=30) as http:
        unsigned = await http.post("/api/agents/far/commands", json={"command": "ping"})
        assert unsigned.json()["error"]["code"] == "operator_signature_required"
        answer = await http.post(
            "/api/agents/far/commands", json={"command": "ping", "intent": signed}
        )
    assert answer.status_code == 200, answer.text
    assert answer.json()["result"]["pong"] is True
