"""A separately installed plugin distribution is discovered and used (plugins/)."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points

import httpx
import trio

from monitoring_ws.agent.handlers import ENTRY_POINT_GROUP, discover
from monitoring_ws.agent.main import build_agent
from tests.support.served import Served as Running

from .agent.test_agent import settings_for


def test_the_uptime_plugin_is_installed_as_its_own_distribution() -> None:
    plugin = distribution("monitoring-ws-uptime")
    assert plugin.metadata["Name"] == "monitoring-ws-uptime"
    [entry] = [e for e in entry_points(group=ENTRY_POINT_GROUP) if e.name == "uptime"]
    assert entry.dist is not None
    assert entry.dist.name == "monitoring-ws-uptime"
    assert "uptime" in discover()


async def test_the_agent_offers_and_runs_the_plugin_command(
    server: Running, http: httpx.AsyncClient
) -> None:
    agent = build_agent(settings_for(server.agent_urls[0], "with-plugin"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        info = (await http.get("/api/websocket/agents/with-plugin")).json()
        assert "uptime" in info["capabilities"]["commands"]
        response = await http.post(
            "/api/websocket/agents/with-plugin/command", json={"command": "uptime"}
        )
        assert response.status_code == 200
        result = response.json()["result"]
        assert result["uptimeS"] > 0
        assert isinstance(result["users"], list)
        nursery.cancel_scope.cancel()
