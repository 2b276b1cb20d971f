"""Command records against a real server: async commands (202), GET and DELETE on both API
trees, late results, re-sends after a reconnect, and records kept across a restart."""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.agent.client import Agent
from monitoring_ws.agent.handlers import CommandContext
from monitoring_ws.agent.runner import CommandRunner
from monitoring_ws.protocol import CommandReceived
from tests.support.served import Served as Running

from ..agent.test_agent import settings_for
from ..conftest import StartServer
from ..support.eventually import eventually
from .agents import open_agent

TOKEN = "records-test-token-0123456789"


async def _slow(args: dict[str, Any], context: CommandContext) -> dict[str, Any]:
    await trio.sleep(float(args.get("seconds", 5)))
    return {"slept": args.get("seconds", 5)}


async def _run_agent(nursery: trio.Nursery, url: str, agent_id: str) -> Agent:
    settings = settings_for(url, agent_id)
    agent = Agent(settings, CommandRunner(settings, {"slow": _slow}))
    nursery.start_soon(agent.run)
    with trio.fail_after(10):
        await agent.connected.wait()
    return agent


async def _record_when(
    http: httpx.AsyncClient, location: str, *states: str, timeout: float = 10
) -> dict[str, Any]:
    async def in_state() -> dict[str, Any] | None:
        response = await http.get(location)
        assert response.status_code == 200, response.text
        record: dict[str, Any] = response.json()
        return record if record["state"] in states else None

    return await eventually(in_state, timeout_s=timeout, what=f"state in {states}")


async def _submit(http: httpx.AsyncClient, path: str, **body: Any) -> httpx.Response:
    return await http.post(path, json={"wait": False, **body})


async def test_an_async_command_answers_202_and_its_record_follows(
    server: Running, http: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    await _run_agent(nursery, server.agent_urls[0], "async-1")
    response = await _submit(
        http,
        "/api/websocket/agents/async-1/command",
        command="slow",
        args={"seconds": 0.2},
        requestedBy="nightly-job",
    )
    assert response.status_code == 202, response.text
    accepted = response.json()
    location = response.headers["Location"]
    assert location == f"/api/websocket/commands/{accepted['commandId']}" == accepted["location"]
    assert accepted["state"] == "sent"
    record = await _record_when(http, location, "succeeded")
    assert record["result"]["result"] == {"slept": 0.2}
    assert record["transport"] == "websocket"
    assert record["requestedBy"] == {
        "address": "127.0.0.1",
        "credential": None,
        "label": "nightly-job",
    }
    assert record["createdAt"] <= record["sentAt"] <= record["finishedAt"]
    assert record["attempts"] == 1
    assert record["late"] is False
    # The transport-neutral twin reads the same record.
    twin = await http.get(f"/api/commands/{accepted['commandId']}")
    assert twin.json() == record


async def test_records_name_the_token_by_fingerprint_only(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    running = await start_server(api_tokens=(TOKEN,))
    await _run_agent(nursery, running.agent_urls[0], "guarded")
    headers = {"Authorization": f"Bearer {TOKEN}"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=headers, timeout=30) as http:
        response = await _submit(
            http, "/api/agents/guarded/commands", command="slow", args={"seconds": 0}
        )
        assert response.status_code == 202, response.text
        assert response.headers["Location"].startswith("/api/commands/")
        record = await _record_when(http, response.headers["Location"], "succeeded")
    expected = "token:" + hashlib.sha256(TOKEN.encode()).hexdigest()[:12]
    assert record["requestedBy"]["credential"] == expected
    assert TOKEN not in str(record)


async def test_delete_cancels_on_the_agent(
    server: Running, http: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    await _run_agent(nursery, server.agent_urls[0], "cancel-1")
    response = await _submit(
        http, "/api/websocket/agents/cancel-1/command", command="slow", args={"seconds": 30}
    )
    location = response.headers["Location"]

    async def _done() -> bool:
        return (await http.get(location)).json()["state"] == "sent"

    await eventually(_done, timeout_s=5)  # handed to the agent
    cancelled = await http.delete(location, headers={"Content-Type": "application/json"})
    assert cancelled.status_code == 200, cancelled.text
    assert cancelled.json()["state"] == "cancelled"

    # The agent was told: its answer (error "cancelled") lands in the record.
    async def answered() -> dict[str, Any] | None:
        record: dict[str, Any] = (await http.get(location)).json()
        return record if record["result"] is not None else None

    record = await eventually(answered, timeout_s=10, what="the agent's answer")
    assert record["state"] == "cancelled"
    assert record["result"]["error"]["code"] == "cancelled"
    again = await http.delete(location, headers={"Content-Type": "application/json"})
    assert again.status_code == 409
    assert again.json()["error"]["code"] == "command_finished"
    assert again.json()["error"]["command"]["state"] == "cancelled"


@pytest.mark.parametrize(
    ("path", "status", "code"),
    [
        ("/api/websocket/commands/no-such-command", 404, "unknown_command"),
        ("/api/commands/no-such-command", 404, "unknown_command"),
        ("/api/websocket/commands/bad%20id", 400, "invalid_command_id"),
    ],
)
async def test_unknown_and_invalid_ids(
    http: httpx.AsyncClient, path: str, status: int, code: str
) -> None:
    for method in ("GET", "DELETE"):
        headers = {"Content-Type": "application/json"}
        response = await http.request(method, path, headers=headers)
        assert response.status_code == status
        assert response.json()["error"]["code"] == code


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"command": "ping", "wait": "no"}, "wait: 'no' is not of type 'boolean'"),
        ({"command": "ping", "requestedBy": "x" * 129}, "requestedBy: "),
    ],
)
async def test_bad_async_bodies_are_400(
    http: httpx.AsyncClient, body: dict[str, Any], message: str
) -> None:
    response = await http.post("/api/websocket/agents/any/command", json=body)
    assert response.status_code == 400
    assert message in response.json()["error"]["message"]


async def test_an_async_command_for_an_absent_agent_is_404(http: httpx.AsyncClient) -> None:
    response = await _submit(http, "/api/websocket/agents/nobody/command", command="ping")
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "agent_not_connected"


async def test_a_result_after_the_caller_gave_up_is_still_recorded(
    server: Running, http: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    async with open_agent(server.agent_urls[0], "tardy") as agent:
        answered = trio.Event()

        async def answer_late() -> None:
            received = await agent.next_command()
            await answered.wait()  # only after the caller got its 504
            await agent.answer(received, ok=True, duration_ms=900, result={"pong": True})

        nursery.start_soon(answer_late)
        response = await http.post(
            "/api/websocket/agents/tardy/command", json={"command": "ping", "timeoutMs": 300}
        )
        assert response.status_code == 504
        command_id = response.json()["error"]["commandId"]
        location = f"/api/websocket/commands/{command_id}"
        assert (await http.get(location)).json()["state"] == "timed_out"
        answered.set()
        record = await _record_when(http, location, "succeeded")
    assert record["late"] is True
    assert record["result"]["result"] == {"pong": True}


async def test_a_command_is_sent_again_when_its_agent_comes_back(
    server: Running, http: httpx.AsyncClient, nursery: trio.Nursery
) -> None:
    url = server.agent_urls[0]
    outcome: dict[str, httpx.Response] = {}

    async def caller() -> None:
        outcome["waited"] = await http.post(
            "/api/websocket/agents/flaky/command", json={"command": "ping", "timeoutMs": 20_000}
        )

    async with open_agent(url, "flaky") as agent:
        nursery.start_soon(caller)
        first: CommandReceived = await agent.next_command()
    # The connection dropped before an answer: the waiting caller hears 502 at once...
    await eventually(lambda: "waited" in outcome, timeout_s=10)
    assert outcome["waited"].status_code == 502
    location = f"/api/websocket/commands/{first.command.command_id}"
    assert (await http.get(location)).json()["state"] == "agent_disconnected"
    # ...and the record waits: the agent back before the deadline gets the command again.
    async with open_agent(url, "flaky") as agent:
        again = await agent.next_command()
        assert again.command.command_id == first.command.command_id
        assert again.command.timeout_ms < 20_000  # what is left of it
        await agent.answer(again, ok=True, duration_ms=1, result={"pong": True})
        record = await _record_when(http, location, "succeeded")
    assert record["attempts"] == 2
    assert record["late"] is False


async def test_records_survive_a_restart_and_follow_the_agent(
    start_server: StartServer, tmp_path: Path
) -> None:
    state = tmp_path / "kept"
    first = await start_server(state_dir=state)
    async with (
        httpx.AsyncClient(base_url=first.api_url, timeout=30) as http,
        open_agent(first.agent_urls[0], "patient") as agent,
    ):
        response = await _submit(
            http,
            "/api/websocket/agents/patient/command",
            command="ping",
            timeoutMs=30_000,
        )
        location = response.headers["Location"]
        await agent.next_command()  # received, never answered: the server goes away
        first.stop()
        await first.gateway.closed.wait()
    second = await start_server(state_dir=state)
    async with httpx.AsyncClient(base_url=second.api_url, timeout=30) as http:
        assert (await http.get(location)).json()["state"] == "agent_disconnected"
        async with open_agent(second.agent_urls[0], "patient") as agent:
            again = await agent.next_command()
            await agent.answer(again, ok=True, duration_ms=3, result={"pong": True})
            record = await _record_when(http, location, "succeeded")
    assert record["attempts"] == 2
