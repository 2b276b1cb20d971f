"""GET /metrics: Prometheus families of a real server with a real agent and commands; the
open loopback ``metrics_listen``; what they count."""

from __future__ import annotations

import json
import re
from typing import Any

import httpx
import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families
from trio_websocket import open_websocket_url

from monitoring_ws.agent.metrics import collect
from monitoring_ws.configbase import ConfigError
from monitoring_ws.host.config import ServerSettings

from .conftest import REPO, StartServer
from .gateway.agents import now_ms, open_agent
from .support.eventually import eventually
from .support.processes import free_port


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """``{(name, sorted labels): value}`` of a Prometheus exposition."""
    found = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            found[sample.name, tuple(sorted(sample.labels.items()))] = sample.value
    return found


async def test_the_server_counts_agents_frames_commands_and_commits(
    start_server: StartServer,
) -> None:
    token = "m" * 32
    port = free_port()
    running = await start_server(api_tokens=(token,), metrics_listen=f"127.0.0.1:{port}")
    auth = {"Authorization": f"Bearer {token}"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=auth, timeout=30) as http:
        async with open_agent(running.agent_urls[0], "agent-p") as agent, trio.open_nursery() as n:
            for number in range(5):
                await agent.send(agent.session.metrics({"cpu": number}, now_ms()))
            n.start_soon(agent.serve_commands)
            body = {"command": "ping", "args": {}}
            assert (await http.post("/api/agents/agent-p/commands", json=body)).status_code == 200
            seed = "/api/websocket/agents/agent-p/command"
            assert (await http.post(seed, json=body)).status_code == 200

            async def committed() -> httpx.Response | None:
                scraped = await http.get("/metrics")
                found = samples(scraped.text)
                return scraped if found["monitoring_ws_state_commit_seconds_count", ()] else None

            # What was accepted gets committed within a tick.
            scraped = await eventually(committed, timeout_s=5)
            found = samples(scraped.text)
            assert scraped.headers["content-type"].startswith("text/plain; version=0.0.4")
            n.cancel_scope.cancel()
        assert (await httpx.AsyncClient().get(f"{running.api_url}/metrics")).status_code == 401
        # The open listener on loopback: no token, /metrics only.
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as open_http:

            async def counted() -> bool:  # the agent's end, with who ended it
                return any(
                    name == "monitoring_ws_agent_disconnects_total" and ("by", "agent") in labels
                    for name, labels in samples((await open_http.get("/metrics")).text)
                )

            await eventually(counted, timeout_s=5)
            assert (await open_http.get("/api/agents")).status_code == 404
    ws = (("transport", "websocket"),)
    assert found["monitoring_ws_agents_connected", ws] == 1
    assert found["monitoring_ws_agent_connects_total", ()] == 1
    assert found["monitoring_ws_frames_total", (("type", "metrics"),)] == 5
    assert found["monitoring_ws_frames_total", (("type", "command_result"),)] == 2
    succeeded = (("outcome", "succeeded"), ("transport", "websocket"))
    assert found["monitoring_ws_commands_total", succeeded] == 2
    assert found["monitoring_ws_command_duration_seconds_count", ws] == 2
    assert found["monitoring_ws_frames_rejected_total", (("reason", "duplicate"),)] == 0
    assert found["monitoring_ws_auth_failures_total", ()] == 0
    assert found["monitoring_ws_spool_bytes", ()] > 0
    assert found["process_resident_memory_bytes", ()] > 0


def test_the_open_metrics_listener_stays_on_loopback() -> None:
    with pytest.raises(ConfigError, match="not loopback"):
        ServerSettings(metrics_listen="0.0.0.0:9464").check()
    ServerSettings(metrics_listen="127.0.0.1:9464").check()


async def test_agent_gauges_show_the_fleet_and_feed_the_dashboard(
    start_server: StartServer,
) -> None:
    running = await start_server(agent_gauges=True)
    async with (
        httpx.AsyncClient(base_url=running.api_url) as http,
        open_agent(running.agent_urls[0], "agent-g") as agent,
    ):
        await agent.send(agent.session.metrics(collect(), now_ms()))  # what our agent sends
        odd = {"cpu": {"percent": "high"}, "load": [None, True, "x"], "disk": [{"mount": 7}]}
        async with open_agent(running.agent_urls[0], "agent-odd") as other:
            await other.send(other.session.metrics(odd, now_ms()))
            await other.send(other.session.heartbeat(now_ms()))
            await other.events()
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()
        text = (await http.get("/metrics")).text
    found = samples(text)
    me = (("agent_id", "agent-g"),)
    assert 0 <= found["monitoring_ws_agent_cpu_percent", me] <= 100
    assert 0 < found["monitoring_ws_agent_memory_percent", me] <= 100
    assert found["monitoring_ws_agent_load", (("agent_id", "agent-g"), ("period", "1m"))] >= 0
    assert any(name == "monitoring_ws_agent_disk_percent" for name, _ in found)
    # An agent's odd values are left out, never an error.
    assert not [
        key for key in found if ("agent_id", "agent-odd") in key[1] and "stamp" not in key[0]
    ]
    # Every family the Grafana dashboard queries is one the server exposes.
    dashboard = json.loads((REPO / "docs" / "grafana-dashboard.json").read_text())
    queried = {
        name
        for panel in dashboard["panels"]
        for target in panel["targets"]
        for name in re.findall(r"\b(?:monitoring_ws|process)_[a-z_0-9]+", target["expr"])
    }
    families = {family.name for family in text_string_to_metric_families(text)}
    exposed = families | {
        f"{name}{suffix}" for name in families for suffix in ("_total", "_bucket")
    }
    assert queried - exposed == {"monitoring_ws_cluster_redis_up"}  # a cluster's only


async def test_metrics_honour_a_tokens_agent_globs(start_server: StartServer) -> None:
    web, every = "w" * 32, "e" * 32
    tokens = (
        {"name": "web", "token": web, "scopes": ["metrics:read"], "agents": ["web-*"]},
        {"name": "all", "token": every, "scopes": ["metrics:read"]},
    )
    running = await start_server(agent_gauges=True, api_tokens=tokens)
    url = running.agent_urls[0]
    async with (
        httpx.AsyncClient(base_url=running.api_url) as http,
        open_agent(url, "web-1") as first,
        open_agent(url, "db-1") as second,
    ):
        for agent in (first, second):
            await agent.send(agent.session.metrics(collect(), now_ms()))
            await agent.send(agent.session.heartbeat(now_ms()))
            await agent.events()  # the heartbeat's answer: the sample went before it
        seen = {}
        for name, token in (("web", web), ("all", every)):
            text = (await http.get("/metrics", headers={"Authorization": f"Bearer {token}"})).text
            seen[name] = {dict(labels).get("agent_id") for _, labels in samples(text)}
    assert "web-1" in seen["web"]
    assert "db-1" not in seen["web"]  # a token for web-* sees no db-1 series
    assert {"web-1", "db-1"} <= seen["all"]


async def test_close_codes_a_peer_chooses_are_bucketed(start_server: StartServer) -> None:
    running = await start_server(agent_listen="127.0.0.1:0")  # the lean listener
    for code in (3999, 4321, 4999, 1000):
        async with open_websocket_url(running.agent_urls[0], connect_timeout=5) as ws:
            await ws.aclose(code)
    async with httpx.AsyncClient(base_url=running.api_url) as http:

        async def every_end() -> tuple[Any, set[str]] | None:  # counted as the server sees it
            found = samples((await http.get("/metrics")).text)
            codes = {
                dict(labels)["code"]
                for name, labels in found
                if name == "monitoring_ws_agent_disconnects_total" and dict(labels)["by"] == "agent"
            }
            return (found, codes) if codes >= {"other", "1000"} else None

        found, codes = await eventually(every_end, timeout_s=5)
    assert codes == {"other", "1000"}, codes  # 3999, 4321 and 4999 are nobody's label values
    other = (("by", "agent"), ("code", "other"))
    assert found["monitoring_ws_agent_disconnects_total", other] == 3
