"""Scoped API tokens: names, scopes, command names and agent globs, against a real server
with real agents; and the parsing of ``api_tokens``."""

from __future__ import annotations

import hashlib

import httpx
import pytest
import trio

from monitoring_ws.configbase import ConfigError
from monitoring_ws.host.tokens import parse_tokens, required_scope

from .conftest import StartServer
from .gateway.agents import open_agent

# The API answers the same on both servers of its port (api_server).
pytestmark = pytest.mark.usefixtures("api_server")

ADMIN, READER, PINGER, GRAFANA = ("a" * 20, "r" * 20, "p" * 20, "g" * 20)
TOKENS = [
    ADMIN,  # a plain string: every scope, as before
    {"name": "reader", "token": READER, "scopes": ["agents:read"], "agents": ["web-*"]},
    {"name": "pinger", "token": PINGER, "scopes": ["commands:send:ping"], "agents": "web-*"},
    {
        "name": "grafana",
        "token_sha256": hashlib.sha256(GRAFANA.encode()).hexdigest(),
        "scopes": ["metrics:read"],
    },
]


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def test_each_token_does_what_its_scopes_say(start_server: StartServer) -> None:
    running = await start_server(api_tokens=TOKENS)
    url = running.agent_urls[0]
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        open_agent(url, "web-1") as web,
        open_agent(url, "db-1"),
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(web.serve_commands)
        ping = {"command": "ping", "args": {}}
        # The reader sees the agents its glob allows, and nothing else.
        listing = await http.get("/api/agents", headers=bearer(READER))
        assert [a["agentId"] for a in listing.json()["agents"]] == ["web-1"]
        seed = await http.get("/api/websocket/agents", headers=bearer(READER))
        assert [a["agentId"] for a in seed.json()["agents"]] == ["web-1"]
        hidden = await http.get("/api/agents/db-1", headers=bearer(READER))
        assert hidden.status_code == 403
        sent = await http.post("/api/agents/web-1/commands", json=ping, headers=bearer(READER))
        assert sent.status_code == 403
        assert sent.json()["error"] == {
            "code": "forbidden",
            "message": "the token reader lacks the scope commands:send",
            "scope": "commands:send",
        }
        for path, scope in (
            ("/metrics", "metrics:read"),
            ("/api/websocket/agents/web-1/config", "config:read"),
        ):
            refused = await http.get(path, headers=bearer(READER))
            assert (refused.status_code, refused.json()["error"]["scope"]) == (403, scope)
        # The pinger may ping web-* agents, nothing more; records name it.
        pinged = await http.post("/api/agents/web-1/commands", json=ping, headers=bearer(PINGER))
        assert pinged.status_code == 200, pinged.text
        record = await http.get(
            f"/api/commands/{pinged.json()['commandId']}", headers=bearer(READER)
        )
        assert record.json()["requestedBy"]["credential"] == "token:pinger"
        other = {"command": "collect_metrics", "args": {}}
        refused = await http.post("/api/agents/web-1/commands", json=other, headers=bearer(PINGER))
        assert refused.status_code == 403
        assert refused.json()["error"]["scope"] == "commands:send:collect_metrics"
        elsewhere = await http.post("/api/agents/db-1/commands", json=ping, headers=bearer(PINGER))
        assert elsewhere.status_code == 403
        assert (await http.get("/api/agents", headers=bearer(PINGER))).status_code == 403
        # Grafana's token reads metrics only; the plain token does everything.
        assert (await http.get("/metrics", headers=bearer(GRAFANA))).status_code == 200
        assert (await http.get("/api/agents", headers=bearer(GRAFANA))).status_code == 403
        everything = await http.get("/api/agents", headers=bearer(ADMIN))
        assert len(everything.json()["agents"]) == 2
        wrong = await http.get("/api/agents", headers=bearer("x" * 20))
        assert wrong.status_code == 401
        nursery.cancel_scope.cancel()


def test_api_tokens_are_checked_when_read() -> None:
    [plain] = parse_tokens(["s" * 16])
    assert plain.credential == f"token:{hashlib.sha256(b's' * 16).hexdigest()[:12]}"
    cases = {
        "at least 16 characters": ["short"],
        "unknown scope 'agents:write'": [
            {"name": "x", "token": "t" * 16, "scopes": ["agents:write"]}
        ],
        "one of them": [{"name": "x", "scopes": ["agents:read"]}],
        "64 hex digits": [{"name": "x", "token_sha256": "abc", "scopes": ["agents:read"]}],
        "same name": [
            {"name": "x", "token": "t" * 16, "scopes": ["agents:read"]},
            {"name": "x", "token": "u" * 16, "scopes": ["agents:read"]},
        ],
        "unknown key tokn": [{"name": "x", "tokn": "t" * 16, "scopes": ["agents:read"]}],
    }
    for message, value in cases.items():
        with pytest.raises(ConfigError, match=message):
            parse_tokens(value)
    assert required_scope("GET", "/api/agents") == "agents:read"
    assert required_scope("POST", "/api/agents/<agent_id>/commands") == "commands:send"
    assert required_scope("DELETE", "/api/commands/<command_id>") == "commands:cancel"
    assert required_scope("GET", "/api/websocket/agents/<agent_id>/config") == "config:read"
