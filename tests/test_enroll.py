"""Enrollment: `token create` on the server, `agent enroll` on the agent over TLS pinned by
the token; the settings it writes connect; a token is spent, scoped, and pinned."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
import trio

from monitoring_ws.agent.main import build_agent
from monitoring_ws.agent.settings import load_settings
from monitoring_ws.protocol import derive_agent_key

from .conftest import SECRET, StartServer
from .support.processes import isolated_env, run_cli


async def cli(tmp_path: Path, *args: str, **env: str) -> tuple[int, str, str]:
    result = await trio.to_thread.run_sync(
        lambda: run_cli(*args, cwd=tmp_path, env=isolated_env(**env))
    )
    return result.returncode, result.stdout, result.stderr


async def test_an_agent_enrolls_itself(start_server: StartServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    config = tmp_path / "monitoring.toml"
    config.write_text(f'[server]\nstate_dir = "{state}"\ntls_self_signed = true\n')
    running = await start_server(state_dir=state, tls_self_signed=True, agent_listen="127.0.0.1:0")
    https = running.agent_urls[0].replace("wss://", "https://").removesuffix("/agent")
    # The public agent listener serves agents, never the API.
    async with httpx.AsyncClient(base_url=https, verify=False) as public:  # noqa: S501 - self-signed
        refused = await public.get("/api/agents")
        assert refused.status_code == 404
        assert refused.json()["error"]["message"] == "this listener serves agents only"
    code, token, err = await cli(
        tmp_path, "token", "create", "--config", str(config), "--uses", "1", "--agents", "web-*"
    )
    assert code == 0, err
    token = token.strip()
    assert token.endswith(running.fingerprint or "missing pin")  # it carries the pin
    output = tmp_path / "agent.json"
    enroll = ("agent", "enroll", "--url", https, "--agent-id", "web-7", "--output", str(output))
    code, _, err = await cli(tmp_path, *enroll, MONITORING_WS_JOIN_TOKEN=token)
    assert code == 0, err
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    written = json.loads(output.read_text())
    assert written == {
        "agentId": "web-7",
        "wsApiUrl": running.agent_urls[0],
        "wsAgentKey": derive_agent_key(SECRET, "web-7").hex(),
        "wsCertSha256": running.fingerprint,
    }
    # What it wrote connects.
    agent = build_agent(load_settings(output, stateDir=str(tmp_path / "outbox")))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        with trio.fail_after(10):
            await agent.connected.wait()
        nursery.cancel_scope.cancel()
    # Spent: a second use is refused, the same way as any refusal.
    again = ("agent", "enroll", "--url", https, "--agent-id", "web-8", "--output", str(output))
    code, _, err = await cli(tmp_path, *again, MONITORING_WS_JOIN_TOKEN=token)
    assert code != 0
    assert "the server refused (403)" in err
    # Scoped: a token for web-* does not enroll db-1.
    create = ("token", "create", "--config", str(config))
    _, scoped, _ = await cli(tmp_path, *create, "--agents", "web-*")
    elsewhere = ("agent", "enroll", "--url", https, "--agent-id", "db-1")
    code, _, err = await cli(tmp_path, *elsewhere, MONITORING_WS_JOIN_TOKEN=scoped.strip())
    assert "the server refused (403)" in err
    # Pinned: a token that pins another certificate sends nothing.
    _, fresh, _ = await cli(tmp_path, *create)
    forged = fresh.strip().rsplit(".", 1)[0] + "." + "0" * 64
    code, _, err = await cli(tmp_path, *elsewhere, MONITORING_WS_JOIN_TOKEN=forged)
    assert "not the one the join token pins" in err
    code, _, err = await cli(tmp_path, *elsewhere, MONITORING_WS_JOIN_TOKEN=fresh.strip())
    assert code == 0, err  # the same token, unspent by the forged attempt
    audit = [json.loads(line) for line in (state / "audit.jsonl").read_text().splitlines()]
    events = [(line["event"], line.get("agentId")) for line in audit]
    assert ("enrolled", "web-7") in events
    assert ("enroll_refused", "web-8") in events
    assert ("enroll_refused", "db-1") in events
    assert token not in (state / "audit.jsonl").read_text()


async def test_an_address_that_keeps_failing_is_slowed(start_server: StartServer) -> None:
    running = await start_server()
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        statuses = []
        for _ in range(12):
            body = {"token": "mwsj1.0000000000000000." + "x" * 43 + ".-", "agentId": "web-1"}
            statuses.append((await http.post("/enroll", json=body)).status_code)
        assert statuses[:10] == [403] * 10  # an unknown token, then...
        assert statuses[10:] == [429, 429]  # ... no more looks at the tokens this minute
        assert (await http.get("/enroll")).headers["allow"] == "POST"
