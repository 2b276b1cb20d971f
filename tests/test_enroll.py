"""Enrollment: `token create` on the server, `agent enroll` on the agent over TLS pinned by
the token; the settings it writes connect; a token is spent, scoped, and pinned."""

from __future__ import annotations

import json
import re
import sqlite3
from pathlib import Path
from typing import Any

import httpx
import trio

from monitoring_ws.agent.main import build_agent
from monitoring_ws.agent.settings import load_settings
from monitoring_ws.clock import wall_ms
from monitoring_ws.gateway.enrollment import JOIN_TOKEN_FILE, JoinTokens
from monitoring_ws.host.server import apply_reload
from monitoring_ws.protocol import CloseCode, derive_agent_key, derive_enrolled_key

from .conftest import SECRET, StartServer
from .gateway.agents import agent_session, close_code, first_frame_close, now_ms, open_agent
from .gateway.test_agent_endpoint import HELLO, signed
from .support.processes import isolated_env, run_cli
from .support.served import config_from_flat


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
    with sqlite3.connect(state / JOIN_TOKEN_FILE) as db:
        (generation,) = db.execute("SELECT generation FROM enrolled WHERE agent_id = 'web-7'")
    assert written == {
        "agentId": "web-7",
        "wsApiUrl": running.agent_urls[0],
        # A key of its own: the id and a generation drawn at enrollment, not the id alone.
        "wsAgentKey": derive_enrolled_key(SECRET, "web-7", generation[0]).hex(),
        "wsCertSha256": running.fingerprint,
    }
    assert written["wsAgentKey"] != derive_agent_key(SECRET, "web-7").hex()
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
    # Known: a valid token does not enroll web-7 a second time; the CLI says what to do.
    _, another, _ = await cli(tmp_path, *create)
    code, _, err = await cli(tmp_path, *enroll, MONITORING_WS_JOIN_TOKEN=another.strip())
    assert code != 0
    assert "the server refused (409)" in err
    assert "--reenroll" in err
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


def _key_works(url: str, agent_id: str, key: str) -> Any:
    """An agent connected with the hex key enrollment answered."""
    return open_agent(url, agent_id, key=bytes.fromhex(key))


async def test_a_join_token_cannot_take_over_an_agent(
    start_server: StartServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    running = await start_server(state_dir=state)
    url = running.agent_urls[0]
    tokens = JoinTokens(state)
    plain = str(tokens.create(ttl_s=600, uses=5, agents=(), pin=None, now_ms=wall_ms()))
    again = str(
        tokens.create(ttl_s=600, uses=5, agents=(), pin=None, now_ms=wall_ms(), reenroll=True)
    )

    async def enroll(http: httpx.AsyncClient, token: str, agent_id: str) -> httpx.Response:
        return await http.post("/enroll", json={"token": token, "agentId": agent_id})

    async with httpx.AsyncClient(base_url=running.api_url) as http:
        async with open_agent(url, "web-1") as live:  # connected with its derived key
            taken = await enroll(http, plain, "web-1")
            assert taken.status_code == 409
            assert taken.json()["error"]["code"] == "conflict"
            assert "--reenroll" in taken.json()["error"]["message"]
            assert live.ws.closed is None  # the real agent stays
        # Gone but known to the state database: still not for the taking.
        assert (await enroll(http, plain, "web-1")).status_code == 409
        # A new id gets a key of its own, not the one derived from its id.
        first = await enroll(http, plain, "web-2")
        assert first.status_code == 200
        key = first.json()["wsAgentKey"]
        assert key != derive_agent_key(SECRET, "web-2").hex()
        code, _ = await first_frame_close(url, signed("auth", HELLO, agent_id="web-2"))
        assert code == CloseCode.AUTH_FAILED  # the id's derived key no longer opens it
        assert (await enroll(http, plain, "web-2")).status_code == 409  # enrolled now
        async with _key_works(url, "web-2", key) as enrolled:
            # A token made to re-enroll replaces the key: the old one stops working.
            rotated = await enroll(http, again, "web-2")
            assert rotated.status_code == 200
            new_key = rotated.json()["wsAgentKey"]
            assert new_key != key
            assert await close_code(enrolled.ws) == CloseCode.AUTH_FAILED
        session = agent_session("web-2", key=bytes.fromhex(key))
        code, _ = await first_frame_close(url, session.start(now_ms()))
        assert code == CloseCode.AUTH_FAILED
        async with _key_works(url, "web-2", new_key) as fresh:
            assert fresh.ws.closed is None
    # Revoked and later taken off the list: the enrolled key does not come back.
    config = config_from_flat(
        {"master_secrets": (SECRET,), "revoked_agents": ("web-2",), "state_dir": state}
    )
    apply_reload(list(running.running.plugins.values()), lambda: config)
    config = config_from_flat({"master_secrets": (SECRET,), "state_dir": state})
    apply_reload(list(running.running.plugins.values()), lambda: config)
    session = agent_session("web-2", key=bytes.fromhex(new_key))
    code, _ = await first_frame_close(url, session.start(now_ms()))
    assert code == CloseCode.AUTH_FAILED


async def test_failed_guesses_do_not_lock_out_a_valid_token_from_the_same_address(
    start_server: StartServer, tmp_path: Path
) -> None:
    state = tmp_path / "state"
    running = await start_server(state_dir=state)
    token = JoinTokens(state).create(ttl_s=600, uses=1, agents=(), pin=None, now_ms=wall_ms())
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        guess = {"token": f"mwsj1.{token.id}.{'x' * 43}.-", "agentId": "web-1"}
        statuses = [(await http.post("/enroll", json=guess)).status_code for _ in range(11)]
        assert statuses == [403] * 10 + [429]  # that token's secret is guessed no more
        # Guessing another token's secret from this address (same NAT) does not stop it.
        other = JoinTokens(state).create(ttl_s=600, uses=1, agents=(), pin=None, now_ms=wall_ms())
        valid = await http.post("/enroll", json={"token": str(other), "agentId": "web-9"})
        assert valid.status_code == 200


async def test_a_token_made_beside_a_self_signed_server_carries_its_pin(
    start_server: StartServer, tmp_path: Path
) -> None:
    """``serve --tls-self-signed --state-dir DIR``, then ``token create --state-dir DIR``
    without the TLS flag: the token pins the certificate the server serves."""
    state = tmp_path / "state"
    running = await start_server(state_dir=state, tls_self_signed=True)
    code, token, err = await cli(tmp_path, "token", "create", "--state-dir", str(state))
    assert code == 0, err
    assert running.fingerprint
    assert token.strip().endswith(running.fingerprint)
    assert "pinning the self-signed certificate" in err
    # The install one-liner it suggests pins the same certificate for curl.
    [pin] = re.findall(r"--pinnedpubkey '(sha256//[A-Za-z0-9+/=]+)'", err)
    url = f"{running.api_url}/healthz"
    for pinned, works in ((pin, True), ("sha256//" + "A" * 43 + "=", False)):
        done = await trio.run_process(
            ["curl", "-fsS", "-k", "--pinnedpubkey", pinned, url], check=False, capture_stdout=True
        )
        assert (done.returncode == 0) is works, pinned
    code, token, err = await cli(tmp_path, "token", "create", "--state-dir", str(tmp_path / "x"))
    assert code == 0, err
    assert "pass the same --state-dir (or --config) as the server" in err


async def test_tokens_are_listed_and_revoked(start_server: StartServer, tmp_path: Path) -> None:
    state = tmp_path / "state"
    running = await start_server(state_dir=state)
    where = ("--state-dir", str(state))
    _, first, _ = await cli(tmp_path, "token", "create", *where, "--agents", "web-*")
    _, second, _ = await cli(tmp_path, "token", "create", *where, "--uses", "3", "--reenroll")
    code, listed, err = await cli(tmp_path, "token", "list", *where, "-o", "json")
    assert code == 0, err
    rows = {row["id"]: row for row in json.loads(listed)}
    first_id, second_id = first.split(".")[1], second.split(".")[1]
    assert rows[first_id]["agents"] == ["web-*"]
    assert rows[second_id]["usesLeft"] == 3
    assert rows[second_id]["reenroll"] is True
    assert first.strip().split(".")[2] not in listed  # never a secret
    code, table, _ = await cli(tmp_path, "token", "list", *where)
    assert code == 0
    assert first_id in table
    assert "REENROLL" in table
    code, out, err = await cli(tmp_path, "token", "revoke", *where, first.strip())
    assert code == 0, err
    assert f"revoked join token {first_id}" in out
    code, _, err = await cli(tmp_path, "token", "revoke", *where, first_id)
    assert code != 0
    assert "no token" in err
    code, _, err = await cli(tmp_path, "token", "revoke", *where, "nonsense")
    assert "16 hex digits" in err
    _, listed, _ = await cli(tmp_path, "token", "list", *where, "-o", "json")
    assert [row["id"] for row in json.loads(listed)] == [second_id]
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        body = {"token": first.strip(), "agentId": "web-3"}
        assert (await http.post("/enroll", json=body)).status_code == 403
