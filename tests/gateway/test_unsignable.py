"""Unsignable input never becomes state: strict bodies, signed before recorded, and a
command that cannot be signed never closes its agent's connection."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest
import trio

from monitoring_ws.clock import wall_ms
from monitoring_ws.gateway.store import StateStore
from monitoring_ws.transports import Requester
from monitoring_ws.transports.records import CommandRecord
from tests.support.served import Served as Running

from ..conftest import StartServer
from .agents import open_agent

pytestmark = pytest.mark.usefixtures("agent_listener")  # both listeners

URL = "/api/websocket/agents/agent-u/command"
JSON = {"Content-Type": "application/json"}


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"command": "ping", "args": {"x": NaN}}', "NaN"),
        (b'{"command": "ping", "args": {"x": Infinity}}', "Infinity"),
        (b'{"command": "ping", "args": {"x": 1e400}}', "overflows"),
        (b'{"command": "ping", "args": {"x": 9007199254740993}}', "2**53"),
        (b'{"command": "ping", "args": {"x": 1, "x": 2}}', "duplicate"),
        (b'{"command": "ping", "args": ' + b'{"a": ' * 80 + b"1" + b"}" * 81, "deeper"),
        (b'{"command": "ping", "args": {"x": "\\ud800"}}', "surrogate"),
        (b'{"command": "ping", "args": {"x": "\xff"}}', "UTF-8"),
    ],
)
async def test_unsignable_bodies_are_400_and_the_agent_stays(
    server: Running, http: httpx.AsyncClient, body: bytes, reason: str
) -> None:
    async with open_agent(server.agent_urls[0], "agent-u") as agent, trio.open_nursery() as n:
        n.start_soon(agent.serve_commands)
        for url in (URL, "/api/agents/agent-u/commands"):
            refused = await http.post(url, content=body, headers=JSON)
            assert refused.status_code == 400, refused.text
            error = refused.json()["error"]
            assert error["code"] == "bad_request"
            assert reason in error["message"]
        ok = await http.post(URL, json={"command": "ping", "args": {"n": 2**53 - 1}})
        assert ok.status_code == 200, ok.text
        assert ok.json()["result"] == {"n": 2**53 - 1}
        n.cancel_scope.cancel()
    # Nothing of the refused ones: the one record is the command that ran.
    records = (await http.get("/api/commands", params={"agentId": "agent-u"})).json()
    assert [record["commandId"] for record in records["commands"]] == [ok.json()["commandId"]]


async def test_a_command_too_large_to_sign_is_413(
    start_server: StartServer,
) -> None:
    running = await start_server(max_frame_bytes=4096)
    async with (
        httpx.AsyncClient(base_url=running.api_url) as http,
        open_agent(running.agent_urls[0], "agent-u") as agent,
        trio.open_nursery() as n,
    ):
        n.start_soon(agent.serve_commands)
        big = await http.post(URL, json={"command": "ping", "args": {"x": "y" * 5000}})
        assert big.status_code == 413, big.text
        assert big.json()["error"]["code"] == "command_too_large"
        ok = await http.post(URL, json={"command": "ping", "args": {"x": "y" * 100}})
        assert ok.status_code == 200
        n.cancel_scope.cancel()


async def test_an_unsignable_stored_command_fails_without_closing_the_agent(
    start_server: StartServer, tmp_path: Path
) -> None:
    """A record that cannot be signed (an older version's, a damaged database) is failed
    when its agent connects; the agent stays connected and takes other commands."""
    store = StateStore(tmp_path / "state" / "state.sqlite3")
    now = wall_ms()
    bad = CommandRecord(
        command_id="00000000-0000-4000-8000-00000000bad0",
        agent_id="agent-u",
        command="ping",
        args={"x": float("nan")},
        timeout_ms=60_000,
        transport="websocket",
        requested_by=Requester("127.0.0.1"),
        created_ms=now,
        updated_ms=now,
    )
    store.put_command(bad)
    await store.commit(now)
    store.close()
    running = await start_server()
    async with (
        httpx.AsyncClient(base_url=running.api_url) as http,
        open_agent(running.agent_urls[0], "agent-u") as agent,
        trio.open_nursery() as n,
    ):
        n.start_soon(agent.serve_commands)
        ok = await http.post(URL, json={"command": "ping", "args": {}})
        assert ok.status_code == 200, ok.text
        record = (await http.get(f"/api/websocket/commands/{bad.command_id}")).json()
        assert record["state"] == "failed"
        assert record["result"]["error"]["code"] == "invalid_command"
        status = (await http.get("/api/websocket/agents/agent-u")).json()
        assert status["connected"] is True
        n.cancel_scope.cancel()
