"""The HTTP API against a real server and real agents."""

from __future__ import annotations

import httpx
import pytest
import trio

from monitoring_ws.configbase import ConfigError
from monitoring_ws.host.config import TransportSettings
from monitoring_ws.host.router import transports_in_order
from monitoring_ws.protocol import CommandError, LogEntry
from tests.support.served import Served as Running

from ..conftest import StartServer
from ..support.eventually import eventually
from .agents import now_ms, open_agent

# The API answers the same on both servers of its port (api_server).
pytestmark = pytest.mark.usefixtures("api_server")

JSON = {"Content-Type": "application/json"}


async def test_agents_list_and_status(server: Running, http: httpx.AsyncClient) -> None:
    assert (await http.get("/api/websocket/agents")).json() == {"agents": [], "count": 0}
    async with open_agent(server.agent_urls[0], "i-0abc123def4567890", commands=("ping", "run")):
        listing = (await http.get("/api/websocket/agents")).json()
        assert listing["count"] == 1
        [agent] = listing["agents"]
        assert agent["agentId"] == "i-0abc123def4567890"
        assert agent["connected"] is True
        assert agent["hostname"] == "host-i-0abc123def4567890"
        assert agent["capabilities"] == {"commands": ["ping", "run"], "features": []}
        assert agent["remoteAddress"].startswith("127.0.0.1:")
        assert agent["connectedAt"] <= agent["lastSeen"] <= now_ms()
        assert {"sessionId", "agentVersion", "instanceId", "node"} <= agent.keys()
        status = (await http.get("/api/websocket/agents/i-0abc123def4567890")).json()
        assert status["connected"] is True

    async def gone() -> bool:
        status = await http.get("/api/websocket/agents/i-0abc123def4567890")
        return status.status_code == 200 and status.json()["connected"] is False

    await eventually(gone, what="the agent listed as gone")
    bad = await http.get("/api/websocket/agents/not%20valid")
    assert bad.status_code == 400
    assert bad.json()["error"]["code"] == "invalid_agent_id"


async def test_metrics_and_logs_reach_the_sink(server: Running, http: httpx.AsyncClient) -> None:
    async with open_agent(server.agent_urls[0], "agent-m") as agent:
        await agent.send(agent.session.metrics({"cpu": {"percent": 7.5}}, now_ms()))
        entry = LogEntry(now_ms(), "error", "disk full", "/var/log/syslog")
        await agent.send(agent.session.logs([entry], now_ms()))
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()  # the heartbeat answer: everything before it was processed
        status = (await http.get("/api/websocket/agents/agent-m")).json()
        assert status["metrics"]["values"] == {"cpu": {"percent": 7.5}}
        logs = (await http.get("/api/websocket/agents/agent-m/logs")).json()
        assert logs["entries"] == [entry.to_payload()]
        bad = await http.get("/api/websocket/agents/agent-m/logs", params={"limit": 0})
        assert bad.status_code == 400


async def test_command_round_trip(server: Running, http: httpx.AsyncClient) -> None:
    async with open_agent(server.agent_urls[0], "agent-c") as agent, trio.open_nursery() as n:
        n.start_soon(agent.serve_commands)
        response = await http.post(
            "/api/websocket/agents/agent-c/command", json={"command": "ping", "args": {"x": 1}}
        )
        assert response.status_code == 200, response.text
        body = response.json()
        assert body["ok"] is True
        assert body["result"] == {"x": 1}
        assert body["durationMs"] == 0
        assert len(body["commandId"]) == 36
        n.cancel_scope.cancel()


async def test_failed_command_is_200_with_the_error(
    server: Running, http: httpx.AsyncClient
) -> None:
    async with open_agent(server.agent_urls[0], "agent-f") as agent, trio.open_nursery() as n:

        async def fail_once() -> None:
            received = await agent.next_command()
            assert received.command.timeout_ms == 10_000  # the documented default
            await agent.answer(
                received, ok=False, duration_ms=4, error=CommandError("not_allowed", "nope")
            )

        n.start_soon(fail_once)
        response = await http.post(
            "/api/websocket/agents/agent-f/command", json={"command": "ping"}
        )
        assert response.status_code == 200
        assert response.json()["error"] == {"code": "not_allowed", "message": "nope"}
        assert response.json()["ok"] is False


async def test_command_errors_have_distinct_statuses(
    server: Running, http: httpx.AsyncClient
) -> None:
    url = "/api/websocket/agents/agent-e/command"
    missing = await http.post(url, json={"command": "ping"})
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "agent_not_connected"
    async with open_agent(server.agent_urls[0], "agent-e") as agent:
        for body, fragment in [
            (b"not json", "not JSON"),
            (b"[]", "JSON object"),
            (b'{"args": {}}', "'command' is a required property"),
            (b'{"command": "ping", "args": []}', "args: [] is not of type 'object'"),
            (b'{"command": "ping", "timeoutMs": "5"}', "timeoutMs: '5' is not of type"),
            (b'{"command": "ping", "timeoutMs": 0}', "timeoutMs: 0 is less than"),
            (b'{"command": "bad name!"}', "command: 'bad name!' does not match"),
            (b'{"command": "ping", "timeoutMs": 3600001}', '"timeoutMs" must be between'),
            (b'{"command": "ping", "tmeoutMs": 5}', "'tmeoutMs' was unexpected"),
        ]:
            bad = await http.post(url, content=body, headers=JSON)
            assert bad.status_code == 400, body
            assert fragment in bad.json()["error"]["message"]
        unsupported = await http.post(url, json={"command": "reboot"})
        assert unsupported.status_code == 400
        assert unsupported.json()["error"]["code"] == "command_not_supported"

        timeout = await http.post(url, json={"command": "ping", "timeoutMs": 200})
        assert timeout.status_code == 504
        assert timeout.json()["error"]["code"] == "command_timeout"
        received = await agent.next_command()  # the agent did get it, with the timeout
        assert received.command.timeout_ms == 200
        assert timeout.json()["error"]["commandId"] == received.command.command_id

        async with trio.open_nursery() as n:

            async def leave_mid_command() -> None:
                await agent.next_command()
                await agent.ws.aclose()

            n.start_soon(leave_mid_command)
            gone = await http.post(url, json={"command": "ping", "timeoutMs": 5000})
        assert gone.status_code == 502
        assert gone.json()["error"]["code"] == "agent_gone"


async def test_unknown_routes_and_methods_answer_json(http: httpx.AsyncClient) -> None:
    missing = await http.get("/api/nothing")
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = await http.delete("/api/websocket/agents")
    assert wrong.status_code == 405
    assert "error" in wrong.json()
    huge = await http.post(
        "/api/websocket/agents/a/command", content=b"x" * (2 << 20), headers=JSON
    )
    assert huge.status_code == 413


async def test_bearer_tokens(start_server: StartServer) -> None:
    token = "t" * 32
    running = await start_server(api_tokens=(token,))
    async with httpx.AsyncClient(base_url=running.api_url) as client:
        anonymous = await client.get("/api/websocket/agents")
        assert anonymous.status_code == 401
        assert anonymous.headers["WWW-Authenticate"].startswith("Bearer")
        wrong = await client.get("/api/websocket/agents", headers={"Authorization": "Bearer x"})
        assert wrong.status_code == 401
        right = await client.get(
            "/api/websocket/agents", headers={"Authorization": f"Bearer {token}"}
        )
        assert right.status_code == 200


async def test_non_loopback_bind_requires_and_enforces_tokens(start_server: StartServer) -> None:
    with pytest.raises(ConfigError, match="beyond loopback"):
        await start_server(listen="0.0.0.0:0")
    token = "s" * 32
    # Bound to every interface, but only ever reached over loopback.
    running = await start_server(listen="0.0.0.0:0", api_tokens=(token,))
    port = running.api_url.rsplit(":", 1)[1]
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/api/websocket/agents")).status_code == 401
        ok = await client.get("/api/websocket/agents", headers={"Authorization": f"bearer {token}"})
        assert ok.status_code == 200


def test_transport_order_names_transports_that_exist() -> None:
    with pytest.raises(ConfigError, match="order names pigeon, which no enabled plugin"):
        transports_in_order([], TransportSettings(order=("pigeon",)))
    # Named but not enabled: nothing, and no error (the built-in names are known).
    assert transports_in_order([], TransportSettings(order=("ssm", "websocket"))) == ()
