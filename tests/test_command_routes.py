"""The lean command routes (raw ASGI, ahead of Quart) answer exactly as the Quart routes:
the same requests go to a real server (served lean) and to its Quart app (the framework's
routes), and the answers are compared (docs/performance.md, "Commands")."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.host.api.agents import COMMAND_ROUTE
from monitoring_ws.host.api.commandroutes import LeanCommandRoutes
from monitoring_ws.host.audit import AuditLog
from monitoring_ws.host.command_service import CommandService
from monitoring_ws.host.commandlog import CommandLog
from monitoring_ws.host.config import ServerSettings
from monitoring_ws.host.plugins import CommandRoute
from monitoring_ws.host.router import TransportRouter
from monitoring_ws.host.tokens import TokenSet

from .conftest import StartServer
from .gateway.agents import open_agent

# The API answers the same on both servers of its port (api_server).
pytestmark = pytest.mark.usefixtures("api_server")

ADMIN, READER = "admin-token-" + "a" * 10, "reader-token-" + "r" * 10
PINGER, WEB = "pinger-token-" + "p" * 10, "web-token-" + "w" * 10
TOKENS = [
    ADMIN,
    {"name": "reader", "token": READER, "scopes": ["agents:read"]},
    {"name": "pinger", "token": PINGER, "scopes": ["commands:send:ping"]},
    {"name": "web", "token": WEB, "scopes": ["commands:send"], "agents": ["web-*"]},
]
JSON = {"Content-Type": "application/json", "Host": "127.0.0.1"}
PING = b'{"command": "ping", "args": {}}'

#: (token, extra headers, body): every branch of the guard and of the command answer.
CASES: list[tuple[str | None, dict[str, str], bytes]] = [
    (ADMIN, {}, PING),
    (ADMIN, {}, b'{"command": "ping", "wait": false, "requestedBy": "lean-test"}'),
    (None, {}, PING),  # 401
    ("not-a-token", {}, PING),  # 401
    (READER, {}, PING),  # 403: scope
    (PINGER, {}, b'{"command": "run", "args": {"commands": ["id"]}}'),  # 403: that command
    (WEB, {}, PING),  # 403: that agent
    (ADMIN, {"Content-Type": "text/plain"}, PING),  # 415
    (ADMIN, {"Origin": "https://evil.example"}, PING),  # 403: cross-origin
    (ADMIN, {"Sec-Fetch-Site": "cross-site"}, PING),
    (ADMIN, {}, b"not json"),
    (ADMIN, {}, b'{"command": "ping", "tmeoutMs": 5}'),
    (ADMIN, {}, b'{"command": "ping", "timeoutMs": 99999999}'),
    (ADMIN, {}, b'{"command": "reboot"}'),  # not offered
    (ADMIN, {}, b"{" + b'"a": 1, ' * 150_000 + b'"command": "ping"}'),  # 413
]


def comparable(body: Any) -> Any:
    """An answer without what differs between two runs of the same command."""
    if isinstance(body, dict):
        return {
            key: "<varies>" if key in {"commandId", "durationMs", "location"} else comparable(value)
            for key, value in body.items()
        }
    return body


@pytest.mark.parametrize("route", ["/api/websocket/agents/{}/command", "/api/agents/{}/commands"])
async def test_the_lean_routes_answer_as_the_framework_routes(
    start_server: StartServer, route: str
) -> None:
    running = await start_server(api_tokens=TOKENS)
    framework = running.running.app.test_client()
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        open_agent(running.agent_urls[0], "db-1") as agent,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(agent.serve_commands)
        for token, extra, body in CASES:
            headers = {**JSON, **extra}
            if token is not None:
                headers["Authorization"] = f"Bearer {token}"
            path = route.format("db-1")
            lean = await http.post(path, content=body, headers=headers)
            quart = await framework.post(path, data=body, headers=headers)
            case = f"{token} {extra} {body[:60]!r}"
            assert lean.status_code == quart.status_code, case
            assert comparable(lean.json()) == comparable(json.loads(await quart.get_data())), case
            for name in ("content-type", "www-authenticate"):
                assert lean.headers.get(name) == quart.headers.get(name), (case, name)
            if lean.status_code == 202:
                prefix = lean.headers["location"].rsplit("/", 1)[0]
                assert prefix == quart.headers["location"].rsplit("/", 1)[0]
        nursery.cancel_scope.cancel()


def test_only_command_posts_are_served_lean() -> None:
    settings = ServerSettings()
    commands = CommandService(
        TransportRouter([_Nowhere()]), CommandLog(None), default_timeout_ms=1, max_timeout_ms=1
    )
    seed = CommandRoute("/api/websocket/agents/", "/command", "websocket", "/x")
    lean = LeanCommandRoutes(
        [COMMAND_ROUTE, seed], commands, settings, TokenSet([]), AuditLog(None)
    )

    def match(method: str, path: str) -> Any:
        found = lean.match({"type": "http", "method": method, "path": path})
        return None if found is None else (found[0].via, found[1])

    assert match("POST", "/api/agents/web-1/commands") == (None, "web-1")
    assert match("POST", "/api/websocket/agents/web-1/command") == ("websocket", "web-1")
    assert match("GET", "/api/agents/web-1/commands") is None  # 405 and the rest: Quart
    assert match("POST", "/api/agents//commands") is None
    assert match("POST", "/api/agents/a/b/commands") is None
    assert match("POST", "/api/agents/web-1/commands/") is None
    assert lean.match({"type": "websocket", "path": "/api/agents/web-1/commands"}) is None


class _Nowhere:
    name = "nowhere"

    async def can_reach(self, agent_id: str, command: str) -> bool:
        return False

    async def send_command(self, order: Any) -> Any:
        raise AssertionError("never sent")

    def health(self) -> dict[str, Any]:
        return {"ok": True}
