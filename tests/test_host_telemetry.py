"""The host serves the telemetry read side (an agent's logs and sessions, the kept
history) whatever the transport: the dashboard reads only these routes. They answer as
the websocket plugin's own routes do, and say plainly when no plugin keeps history."""

from __future__ import annotations

import httpx
import trio

from monitoring_ws.protocol import LogEntry

from .conftest import StartServer
from .gateway.agents import now_ms, open_agent
from .support.eventually import eventually
from .support.served import ssm_only_app

SCOPED = "scoped-token-" + "s" * 10
ADMIN = "admin-token-" + "a" * 10
TOKENS = [ADMIN, {"name": "web", "token": SCOPED, "scopes": ["agents:read"], "agents": ["web-*"]}]


async def test_the_host_routes_answer_as_the_plugins(start_server: StartServer) -> None:
    running = await start_server(api_tokens=TOKENS)
    admin = {"Authorization": f"Bearer {ADMIN}"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=admin, timeout=30) as http:
        async with open_agent(running.agent_urls[0], "web-1") as agent:
            await agent.send(agent.session.metrics({"cpu": {"percent": 3}}, now_ms()))
            lines = [LogEntry(now_ms(), "info", f"line {i}", "syslog") for i in range(3)]
            await agent.send(agent.session.logs(lines, now_ms()))
            await agent.send(agent.session.heartbeat(now_ms()))
            await agent.events()  # the heartbeat's answer: both frames were taken

            async def kept() -> bool:
                page = (await http.get("/api/telemetry", params={"agentId": "web-1"})).json()
                return len(page["items"]) == 2

            await eventually(kept, what="both frames in the history")
            logs = await http.get("/api/agents/web-1/logs", params={"limit": 2})
            assert (
                logs.json()
                == (await http.get("/api/websocket/agents/web-1/logs", params={"limit": 2})).json()
            )
            assert [entry["message"] for entry in logs.json()["entries"]] == ["line 1", "line 2"]
            for query in ({"agentId": "web-1"}, {"type": "log"}, {"after": 1, "limit": 1}):
                host = await http.get("/api/telemetry", params=query)
                plugin = await http.get("/api/websocket/telemetry", params=query)
                assert host.status_code == 200
                assert host.json() == plugin.json(), query
        sessions = (await http.get("/api/agents/web-1/sessions")).json()["sessions"]
        plugin_sessions = (await http.get("/api/websocket/agents/web-1/connections")).json()
        assert [{**s, "transport": "websocket"} for s in plugin_sessions["sessions"]] == sessions
        assert len(sessions) == 1
        for bad in ({"type": "command"}, {"since": "yesterday"}, {"limit": 1001}):
            assert (await http.get("/api/telemetry", params=bad)).status_code == 400
        assert (await http.get("/api/agents/bad%20id/logs")).status_code == 400
    scoped = {"Authorization": f"Bearer {SCOPED}"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=scoped, timeout=30) as http:
        # A token that reaches some agents only names one of them, or is refused.
        assert (await http.get("/api/telemetry")).status_code == 403
        assert (await http.get("/api/telemetry", params={"agentId": "db-1"})).status_code == 403
        assert (await http.get("/api/telemetry", params={"agentId": "web-1"})).status_code == 200
        assert (await http.get("/api/agents/db-1/logs")).status_code == 403
        assert (await http.get("/api/agents/db-1/sessions")).status_code == 403


async def test_without_a_plugin_that_keeps_history_the_answer_says_so() -> None:
    client = ssm_only_app().test_client()
    answer = await client.get("/api/telemetry", headers={"Host": "127.0.0.1"})
    assert answer.status_code == 404
    assert (await answer.get_json())["error"]["code"] == "no_history"
    logs = await client.get("/api/agents/i-0abc/logs", headers={"Host": "127.0.0.1"})
    assert (await logs.get_json()) == {"agentId": "i-0abc", "entries": []}
    sessions = await client.get("/api/agents/i-0abc/sessions", headers={"Host": "127.0.0.1"})
    assert (await sessions.get_json()) == {"agentId": "i-0abc", "sessions": []}
    await trio.lowlevel.checkpoint()
