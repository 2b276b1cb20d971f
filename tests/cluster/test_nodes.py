"""Server nodes sharing a real redis-server: listings span nodes, the newest connection of
an agent wins wherever it is, a dead node's agents expire, a missing Redis is a clear error."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import coredis
import httpx
import trio

from tests.support.served import Served as Running

from ..conftest import SECRET, StartServer
from ..gateway.agents import CloseCode, close_code, open_agent
from ..support import processes
from ..support.eventually import eventually
from ..support.processes import isolated_env, run_cli, server_process
from .helpers import serving_agent, start_node


async def _agents(running: Running) -> dict[str, Any]:
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        listing = (await http.get("/api/websocket/agents")).json()
    return {agent["agentId"]: agent for agent in listing["agents"]}


async def test_any_node_lists_every_agent(
    start_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    async with (
        open_agent(node_a.agent_urls[0], "on-a"),
        open_agent(node_b.agent_urls[0], "on-b"),
    ):
        for node in (node_a, node_b):
            agents = await _agents(node)
            assert {name: agent["node"] for name, agent in agents.items()} == {
                "on-a": "node-a",
                "on-b": "node-b",
            }
        async with httpx.AsyncClient(base_url=node_a.api_url) as http:
            status = (await http.get("/api/websocket/agents/on-b")).json()
        assert status["connected"] is True
        assert status["node"] == "node-b"

    async def _done() -> bool:
        return not (await _agents(node_a))

    await eventually(_done, timeout_s=5)  # a clean disconnect leaves every listing at once


async def test_the_newest_connection_wins_across_nodes(
    start_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    async with (
        open_agent(node_a.agent_urls[0], "mover") as older,
        open_agent(node_b.agent_urls[0], "mover"),  # entered second: the newer connection
    ):
        assert await close_code(older.ws) == CloseCode.REPLACED
        assert (await _agents(node_a))["mover"]["node"] == "node-b"


async def test_a_dead_nodes_agents_expire(tmp_path: Path, redis_url: str) -> None:
    port = processes.free_port()
    node = processes.server(tmp_path, port, "--redis-url", redis_url)
    node.args = (*node.args, "--config", str(_fast_heartbeats(tmp_path)))
    await trio.to_thread.run_sync(node.start)
    try:
        async with open_agent(f"ws://127.0.0.1:{port}/agent", "orphan"):
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:
                assert (await http.get("/api/websocket/agents/orphan")).json()["connected"]
            os.kill(node.pid, signal.SIGKILL)  # no unregister, no close frame
            await trio.to_thread.run_sync(node.popen.wait)  # type: ignore[union-attr]
    except Exception:
        node.stop()
        raise
    witness = processes.server(tmp_path / "w", processes.free_port(), "--redis-url", redis_url)
    (tmp_path / "w").mkdir()
    await trio.to_thread.run_sync(witness.start)
    try:
        api = witness.args[witness.args.index("--listen") + 1]
        async with httpx.AsyncClient(base_url=f"http://{api}") as http:

            async def _done() -> bool:
                return not ((await http.get("/api/websocket/agents")).json()["count"])

            await eventually(_done, timeout_s=10)  # three heartbeat intervals of 300 ms, then gone
    finally:
        await trio.to_thread.run_sync(witness.stop)


def _fast_heartbeats(tmp_path: Path) -> Path:
    config = tmp_path / "fast.toml"
    config.write_text("[gateway]\nheartbeat_interval_ms = 300\n", encoding="utf-8")
    return config


def test_redis_unreachable_at_start_is_a_clear_error(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--listen",
        "127.0.0.1:0",
        "--redis-url",
        "redis://:hunter2@127.0.0.1:1",
        cwd=tmp_path,
        env=isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET),
    )
    assert result.returncode != 0
    assert "cannot reach Redis at redis://:***@127.0.0.1:1" in result.stderr
    assert "hunter2" not in result.stderr


async def test_three_node_processes_act_as_one(tmp_path: Path, redis_url: str) -> None:
    nodes = []
    try:
        for index in range(3):
            home = tmp_path / f"n{index}"
            home.mkdir()
            port = processes.free_port()
            node = processes.server(home, port, "--redis-url", redis_url)
            nodes.append((node, port))
            await trio.to_thread.run_sync(node.start)
        async with trio.open_nursery() as agents:
            for index, (_, port) in enumerate(nodes):
                await agents.start(serving_agent, f"ws://127.0.0.1:{port}/agent", f"p{index}")
            for _, port in nodes:  # every node lists the three, and reaches each one
                base = f"http://127.0.0.1:{port}"
                async with httpx.AsyncClient(base_url=base, timeout=30) as http:
                    listing = (await http.get("/api/websocket/agents")).json()
                    assert sorted(a["agentId"] for a in listing["agents"]) == ["p0", "p1", "p2"]
                    assert len({a["node"] for a in listing["agents"]}) == 3
                    for index in range(3):
                        response = await http.post(
                            f"/api/agents/p{index}/commands", json={"command": "ping"}
                        )
                        assert response.status_code == 200, response.text
            agents.cancel_scope.cancel()
    finally:
        for node, _ in nodes:
            await trio.to_thread.run_sync(node.stop)


def test_the_monitoring_host_runs_a_cluster_node(tmp_path: Path, redis_url: str) -> None:
    config = tmp_path / "monitoring.toml"
    config.write_text(
        f'[plugins.websocket]\nenabled = true\nlisten = "127.0.0.1:0"\n'
        f'master_secrets = ["{SECRET}"]\nredis_url = "{redis_url}"\nnode_id = "hosted-node"\n'
    )
    with server_process("--config", str(config), env=isolated_env(), cwd=tmp_path) as (
        process,
        _api,
        ws,
    ):

        async def scenario() -> None:
            async with open_agent(ws, "in-host"):
                client: coredis.Redis[str] = coredis.Redis.from_url(
                    redis_url, decode_responses=True
                )
                async with client:
                    held = json.loads(await client.get("mws:agent:in-host") or "{}")["m"]
                assert held["node"] == "hosted-node"
            process.send_signal(signal.SIGTERM)

        trio.run(scenario)
        assert process.wait(timeout=15) == 0


async def test_an_agent_that_got_its_reply_is_listed_on_every_node(
    start_server: StartServer, tmp_path: Path, redis_url: str, monkeypatch: Any
) -> None:
    """The auth reply waits for the registration in Redis, however slow: no window where
    the agent thinks it is connected and another node says it is not."""
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    registry = node_a.gateway.registry
    register = registry.register

    async def slow_register(connection: Any) -> None:
        await trio.sleep(0.3)  # a slow Redis
        await register(connection)

    monkeypatch.setattr(registry, "register", slow_register)
    async with open_agent(node_a.agent_urls[0], "prompt"):
        assert "prompt" in await _agents(node_b)  # at once, no waiting
