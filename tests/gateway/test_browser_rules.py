"""No web page can drive the API: cross-site requests, DNS rebinding, simple POSTs."""

from __future__ import annotations

import httpx
import pytest
import trio

from monitoring_ws.host.api.guard import check_browser_rules, check_content_type, host_name
from tests.support.served import Served as Running

from ..conftest import StartServer
from .agents import open_agent

# The API answers the same on both servers of its port (api_server).
pytestmark = pytest.mark.usefixtures("api_server")

TOKEN = "a-token-of-sixteen-chars"


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ("localhost:4000", ("localhost", 4000)),
        ("LOCALHOST", ("localhost", None)),
        ("127.0.0.1:1", ("127.0.0.1", 1)),
        ("[::1]:4000", ("::1", 4000)),
        ("[::1]", ("::1", None)),
        ("example.com.:80", ("example.com", 80)),
        ("", None),
        ("[::1", None),
        ("host:port", None),
        ("host:99999", None),
        ("[::1]x", None),
    ],
)
def test_host_header_parsing(header: str, expected: tuple[str, int | None] | None) -> None:
    assert host_name(header) == expected


@pytest.mark.parametrize(
    "host", ["localhost:4000", "127.0.0.1:4000", "127.9.9.9", "[::1]:4000", "a.localhost"]
)
def test_loopback_hosts_pass_without_tokens(host: str) -> None:
    assert check_browser_rules({"host": host}, tokens_configured=False, allowed_hosts=()) is None


@pytest.mark.parametrize(
    "host", ["rebind.attacker.example", "10.0.0.1:4000", "localhost.attacker.example", ""]
)
def test_other_hosts_are_refused_without_tokens(host: str) -> None:
    refusal = check_browser_rules({"host": host}, tokens_configured=False, allowed_hosts=())
    assert refusal is not None
    assert (refusal.status, refusal.code) == (403, "host_not_allowed")
    # With tokens the token is the credential; an allowed name passes without one.
    assert check_browser_rules({"host": host}, tokens_configured=True, allowed_hosts=()) is None
    if host:
        name = host.partition(":")[0]
        ok = check_browser_rules({"host": host}, tokens_configured=False, allowed_hosts=[name])
        assert ok is None


@pytest.mark.parametrize(
    ("origin", "allowed"),
    [
        ("http://localhost:4000", True),
        ("HTTP://LOCALHOST:4000", True),
        ("http://localhost:4001", False),
        ("https://localhost", False),  # port 443, not 4000
        ("http://evil.example", False),
        ("null", False),
        ("file://", False),
    ],
)
def test_origin_must_be_this_server(origin: str, allowed: bool) -> None:
    headers = {"host": "localhost:4000", "origin": origin}
    refusal = check_browser_rules(headers, tokens_configured=False, allowed_hosts=())
    assert (refusal is None) is allowed


@pytest.mark.parametrize(("site", "allowed"), [("same-origin", True), ("none", True)])
def test_fetch_metadata(site: str, allowed: bool) -> None:
    headers = {"host": "localhost", "sec-fetch-site": site}
    assert (check_browser_rules(headers, tokens_configured=False, allowed_hosts=()) is None) is (
        allowed
    )
    for foreign in ("cross-site", "same-site", "Cross-Site"):
        headers["sec-fetch-site"] = foreign
        refusal = check_browser_rules(headers, tokens_configured=True, allowed_hosts=())
        assert refusal is not None
        assert refusal.code == "cross_origin"


def test_writes_need_json() -> None:
    assert check_content_type("GET", {}) is None
    assert check_content_type("POST", {"content-type": "application/json"}) is None
    assert check_content_type("delete", {"content-type": "Application/JSON; charset=utf-8"}) is None
    for kind in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", ""):
        refusal = check_content_type("POST", {"content-type": kind})
        assert refusal is not None
        assert refusal.status == 415
    refusal = check_content_type("DELETE", {})
    assert refusal is not None
    assert "Content-Type: application/json" in refusal.message


async def test_a_web_page_cannot_run_a_command(server: Running, http: httpx.AsyncClient) -> None:
    """The attacks of the issue, against a default server with a real agent connected."""
    url = "/api/websocket/agents/agent-b/command"
    body = b'{"command": "ping", "args": {}}'
    received: list[str] = []
    async with open_agent(server.agent_urls[0], "agent-b") as agent, trio.open_nursery() as n:

        async def serve() -> None:
            while True:
                command = await agent.next_command()
                received.append(command.command.command)
                await agent.answer(command, ok=True, duration_ms=0, result={})

        n.start_soon(serve)
        # What any page can send without a preflight: text/plain.
        simple = await http.post(url, content=body, headers={"Content-Type": "text/plain"})
        assert simple.status_code == 415
        assert simple.json()["error"]["code"] == "unsupported_media_type"
        # A page that got JSON through somehow still carries its Origin.
        foreign = await http.post(
            url,
            content=body,
            headers={"Content-Type": "application/json", "Origin": "https://evil.example"},
        )
        assert foreign.status_code == 403
        assert foreign.json()["error"]["code"] == "cross_origin"
        fetched = await http.get("/api/websocket/agents", headers={"Sec-Fetch-Site": "cross-site"})
        assert fetched.status_code == 403
        # DNS rebinding: the page's own name, resolved to 127.0.0.1.
        for path in ("/api/websocket/agents", "/api/agents", "/api/websocket/agents/agent-b"):
            rebound = await http.get(path, headers={"Host": "rebind.attacker.example"})
            assert rebound.status_code == 403, path
            assert rebound.json()["error"]["code"] == "host_not_allowed"
        # No CORS: a preflight gets no permission.
        preflight = await http.options(
            url,
            headers={
                "Origin": "https://evil.example",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "content-type",
            },
        )
        assert "access-control-allow-origin" not in preflight.headers
        # The operator's own calls, as curl and scripts make them, still work.
        ok = await http.post(url, json={"command": "ping", "args": {}})
        assert ok.status_code == 200, ok.text
        assert "access-control-allow-origin" not in ok.headers
        same = await http.post(
            url,
            json={"command": "ping", "args": {}},
            headers={"Origin": server.api_url, "Sec-Fetch-Site": "same-origin"},
        )
        assert same.status_code == 200, same.text
        n.cancel_scope.cancel()
    assert received == ["ping", "ping"]  # only the two legitimate calls reached the agent


async def test_allowed_hosts_and_tokens(start_server: StartServer) -> None:
    running = await start_server(allowed_hosts=("Monitor.Internal",))
    async with httpx.AsyncClient(base_url=running.api_url) as client:
        named = await client.get("/api/agents", headers={"Host": "monitor.internal:4000"})
        assert named.status_code == 200
        other = await client.get("/api/agents", headers={"Host": "other.internal"})
        assert other.status_code == 403
    with_tokens = await start_server(api_tokens=(TOKEN,))
    async with httpx.AsyncClient(base_url=with_tokens.api_url) as client:
        auth = {"Authorization": f"Bearer {TOKEN}", "Host": "monitor.example.com"}
        assert (await client.get("/api/agents", headers=auth)).status_code == 200
        anonymous = await client.get("/api/agents", headers={"Host": "monitor.example.com"})
        assert anonymous.status_code == 401
        cross = await client.get("/api/agents", headers={**auth, "Origin": "https://x.example"})
        assert cross.status_code == 403
