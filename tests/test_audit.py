"""The audit log: commands, cancels, refused requests (rate-limited), agents' failed
signatures and reloads, with tokens by name and never the token (a real server)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import trio

from monitoring_ws.host.server import apply_reload
from monitoring_ws.protocol import derive_agent_key

from .conftest import SECRET, StartServer
from .gateway.agents import first_frame_close, open_agent
from .gateway.test_agent_endpoint import HELLO, signed
from .support.eventually import eventually
from .support.served import config_from_flat

ADMIN, READER = "admin-token-" + "a" * 10, "reader-token-" + "r" * 10
TOKENS = [ADMIN, {"name": "reader", "token": READER, "scopes": ["agents:read"]}]


def lines(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


async def until(path: Path, check: Any) -> list[dict[str, Any]]:
    """The audit log's lines once ``check`` holds for them."""
    found: list[dict[str, Any]] = []

    def holds() -> bool:
        found[:] = lines(path)
        return bool(check(found))

    await eventually(holds, what="the audit lines")
    return found


async def test_what_was_asked_and_refused_is_audited(
    start_server: StartServer, tmp_path: Path
) -> None:
    running = await start_server(api_tokens=TOKENS, state_dir=tmp_path / "state")
    audit = tmp_path / "state" / "audit.jsonl"
    admin = {"Authorization": f"Bearer {ADMIN}"}
    reader = {"Authorization": f"Bearer {READER}"}
    ping = {"command": "ping", "args": {}}
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        open_agent(running.agent_urls[0], "agent-au") as agent,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(agent.serve_commands)
        sent = await http.post("/api/agents/agent-au/commands", json=ping, headers=admin)
        command_id = sent.json()["commandId"]
        seed = await http.post(
            "/api/websocket/agents/agent-au/command",
            json={**ping, "requestedBy": "seed-caller"},
            headers=admin,
        )
        assert "transport" not in seed.json()  # the seed's shape
        finished = await http.delete(
            f"/api/commands/{command_id}",
            headers={**admin, "Content-Type": "application/json"},
        )
        assert finished.status_code == 409
        assert (
            await http.post("/api/agents/agent-au/commands", json=ping, headers=reader)
        ).status_code == 403
        assert (await http.get("/api/agents")).status_code == 401
        nursery.cancel_scope.cancel()
    wrong = derive_agent_key("another secret", "agent-evil")
    await first_frame_close(
        running.agent_urls[0], signed("auth", HELLO, agent_id="agent-evil", key=wrong)
    )
    plugins = list(running.running.plugins.values())
    apply_reload(
        plugins, lambda: config_from_flat({"master_secrets": (SECRET,)}), running.running.audit
    )
    found = await until(audit, lambda ls: any(line["event"] == "reload" for line in ls))
    by_event = {(line["event"], line.get("method"), line.get("status")): line for line in found}
    command = next(line for line in found if line.get("path") == "/api/agents/agent-au/commands")
    assert command["command"] == "ping"
    assert command["commandId"] == command_id
    assert command["agentId"] == "agent-au"
    assert command["token"] not in {None, ADMIN}  # named by its fingerprint
    assert by_event["request", "DELETE", 409]["path"] == f"/api/commands/{command_id}"
    # Both routes go through the one command service: a line per command, who asked.
    ran = [line for line in found if line["event"] == "command"]
    assert [line["commandId"] for line in ran] == [command_id, seed.json()["commandId"]]
    assert {line["transport"] for line in ran} == {"websocket"}
    assert ran[1]["requestedBy"]["label"] == "seed-caller"
    assert ran[0]["requestedBy"]["credential"].endswith(command["token"])
    assert by_event["refused", "POST", 403]["token"] == "reader"
    assert by_event["refused", "GET", 401]["token"] is None
    assert by_event["agent_auth_failed", None, None]["agentId"] == "agent-evil"
    assert by_event["reload", None, None]["ok"] is True
    text = audit.read_text()
    assert ADMIN not in text
    assert READER not in text


async def test_refusals_are_rate_limited(start_server: StartServer, tmp_path: Path) -> None:
    running = await start_server(api_tokens=TOKENS, state_dir=tmp_path / "state")
    audit = tmp_path / "state" / "audit.jsonl"
    started = time.monotonic()
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        for _ in range(100):
            assert (await http.get("/api/agents")).status_code == 401
    seconds = time.monotonic() - started
    found = await until(audit, lambda ls: len(ls) >= 10)
    refused = [line for line in found if line["event"] == "refused"]
    assert 10 <= len(refused) <= 10 * (int(seconds) + 2)
    assert len(refused) < 100
