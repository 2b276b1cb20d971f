"""An agent process killed with -9 in the middle of a command and restarted: the record ends
``agent_disconnected`` (never silently open), and the command never runs twice."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import trio

from ..conftest import StartServer
from ..support import processes
from ..support.eventually import eventually


async def _record(http: httpx.AsyncClient, location: str) -> dict[str, Any]:
    response = await http.get(location)
    assert response.status_code == 200, response.text
    record: dict[str, Any] = response.json()
    return record


async def _until(
    http: httpx.AsyncClient, location: str, check: Any, timeout: float
) -> dict[str, Any]:
    async def record_if_held() -> dict[str, Any] | None:
        record = await _record(http, location)
        return record if check(record) else None

    return await eventually(record_if_held, timeout_s=timeout, what=f"{location}'s state")


async def test_an_agent_killed_mid_command_reports_it_after_restart(
    start_server: StartServer, tmp_path: Path
) -> None:
    running = await start_server()
    port = int(running.agent_urls[0].rsplit(":", 1)[1].split("/")[0])
    marker = tmp_path / "ran.txt"
    # One allowed command line: it leaves a mark, then takes its time.
    line = f"/bin/sh -c 'echo ran >> {marker}; sleep 8'"
    victim = processes.agent(tmp_path, port, "victim", allowedCommands=[line])
    await trio.to_thread.run_sync(victim.start)
    try:
        async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as http:
            response = await http.post(
                "/api/websocket/agents/victim/command",
                json={
                    "command": "run",
                    "args": {"command": line},
                    "timeoutMs": 60_000,
                    "wait": False,
                },
            )
            assert response.status_code == 202, response.text
            location = response.headers["Location"]
            await eventually(lambda: bool(marker.exists()), timeout_s=10)  # running on the agent
            await trio.to_thread.run_sync(victim.kill)
            gone = await _until(http, location, lambda r: r["state"] == "agent_disconnected", 10)
            assert gone["finishedAt"] is None  # it waits for the agent until its deadline
            await trio.to_thread.run_sync(victim.start)  # same outbox and journal
            record = await _until(http, location, lambda r: r["finishedAt"] is not None, 20)
            # The server sent it again on reconnect; the journal refused to run it twice.
            await trio.sleep(1.0)
    finally:
        await trio.to_thread.run_sync(victim.stop)
    assert record["state"] == "agent_disconnected"
    assert record["result"]["error"]["code"] == "interrupted"
    assert record["attempts"] == 2
    assert marker.read_text().splitlines() == ["ran"]
    assert "was started before: not running it again" in (tmp_path / "victim.log").read_text()
