"""The router through the neutral API: WebSocket when it can, SSM when it cannot, never both."""

from __future__ import annotations

from typing import Any

import boto3
import httpx
import pytest
import trio

from monitoring_ws.host.router import TransportRouter

from ..conftest import StartServer
from ..gateway.agents import open_agent
from ..support.eventually import eventually
from .test_ssm import INSTANCE, moto_ssm

__all__ = ["moto_ssm"]


def ssm_commands() -> list[dict[str, Any]]:
    return list(boto3.client("ssm").list_commands()["Commands"])


async def post(http: httpx.AsyncClient, agent_id: str, body: dict[str, Any]) -> httpx.Response:
    return await http.post(f"/api/agents/{agent_id}/commands", json=body)


async def test_websocket_first_ssm_when_it_cannot(moto_ssm: str, start_server: StartServer) -> None:
    running = await start_server(ssm=True, ssm_shell_allowed=("uptime",))
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as http:
        async with open_agent(running.agent_urls[0], INSTANCE) as agent, trio.open_nursery() as n:
            n.start_soon(agent.serve_commands)
            status = (await http.get(f"/api/agents/{INSTANCE}")).json()
            assert status["transports"] == {"websocket": True, "ssm": True}
            listing = (await http.get("/api/agents")).json()
            assert listing["transports"] == ["websocket", "ssm"]
            via_ws = await post(http, INSTANCE, {"command": "ping", "args": {"n": 1}})
            assert via_ws.status_code == 200
            assert via_ws.json()["transport"] == "websocket"
            assert via_ws.json()["result"] == {"n": 1}
            # The agent does not offer `run`, and `run` never goes to SSM: the refusal says why.
            refused = await post(http, INSTANCE, {"command": "run", "args": {"command": "id"}})
            assert refused.status_code == 404
            message = refused.json()["error"]["message"]
            assert "ssm: 'run' never goes to SSM" in message, message
            # Shell over SSM is its own command, allowed line by line on the server.
            shell = {"command": "ssm_shell", "args": {"commands": ["uptime"]}}
            via_ssm = await post(http, INSTANCE, shell)
            assert via_ssm.json()["transport"] == "ssm", via_ssm.text
            not_listed = {"command": "ssm_shell", "args": {"commands": ["cat /etc/shadow"]}}
            assert (await post(http, INSTANCE, not_listed)).status_code == 400
            assert len(ssm_commands()) == 1
            n.cancel_scope.cancel()

        async def _done() -> bool:
            return not (
                (await http.get(f"/api/agents/{INSTANCE}")).json()["transports"]["websocket"]
            )

        await eventually(_done, timeout_s=5)  # the agent is gone
        fallback = await post(http, INSTANCE, {"command": "ping"})
        assert fallback.status_code == 200
        assert fallback.json()["transport"] == "ssm"
        assert len(ssm_commands()) == 2
        unsafe = await post(http, INSTANCE, {"command": "collect_metrics"})
        assert unsafe.status_code == 404
        assert "not SSM-safe" in unsafe.json()["error"]["message"]
        assert len(ssm_commands()) == 2
        nowhere = await post(http, "web-01", {"command": "ping"})
        assert nowhere.status_code == 404
        assert nowhere.json()["error"]["code"] == "agent_not_connected"


async def test_a_command_that_may_have_run_is_never_sent_twice(
    moto_ssm: str, start_server: StartServer
) -> None:
    running = await start_server(ssm=True)
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        open_agent(running.agent_urls[0], INSTANCE) as agent,
    ):
        # Delivered, never answered: 504, and SSM must not run it again.
        timed_out = await post(http, INSTANCE, {"command": "ping", "timeoutMs": 200})
        assert timed_out.status_code == 504
        assert (await agent.next_command()).command.command == "ping"
    assert ssm_commands() == []


async def test_websocket_only_by_default(start_server: StartServer) -> None:
    running = await start_server()
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        status = (await http.get(f"/api/agents/{INSTANCE}")).json()
        assert status["transports"] == {"websocket": False}
        missing = await post(http, INSTANCE, {"command": "ping"})
        assert missing.status_code == 404


def test_a_router_needs_a_transport() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TransportRouter([])
