"""A separately installed plugin distribution is discovered and used (plugins/)."""

from __future__ import annotations

from importlib.metadata import distribution, entry_points
from pathlib import Path

import httpx
import pytest
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


def test_an_agent_command_that_does_not_load_is_left_out(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    dist = tmp_path / "broken_commands-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-commands\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[monitoring_ws.agent_commands]\nvanished = module_that_is_gone:handler\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    found = discover()
    assert "vanished" not in found
    assert "ping" in found  # the rest still load
    assert "command 'vanished' from broken-commands" in caplog.text
