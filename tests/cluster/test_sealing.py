"""Redis is not a way in: node messages and presence are sealed with the cluster key, and
the shared replay window fails closed after a bounded time."""

from __future__ import annotations

import json
from pathlib import Path

import coredis
import httpx
import pytest
import trio

from monitoring_ws.cluster.replay import RedisReplayWindow
from monitoring_ws.cluster.sealing import WINDOW_MS, NodeSeal
from monitoring_ws.protocol import ReplayVerdict

from ..conftest import StartServer
from ..gateway.agents import now_ms, open_agent
from .helpers import start_node


def test_seal_and_open() -> None:
    seal = NodeSeal(["secret"])
    sealed = seal.seal({"type": "command", "x": 1}, 1_000_000)
    assert NodeSeal(["secret"]).open(sealed, 1_000_000) == {"type": "command", "x": 1}
    assert seal.open(sealed, 1_000_000) == {"type": "command", "x": 1}
    assert seal.open(sealed, 1_000_000) is None  # the same nonce again: a replay
    rotated = NodeSeal(["new", "secret"])
    assert rotated.open(sealed, 1_000_000) is not None  # the old secret still opens
    assert NodeSeal(["other"]).open(sealed, 1_000_000) is None
    assert NodeSeal(["secret"]).open(sealed, 1_000_000 + WINDOW_MS + 1) is None
    assert NodeSeal(["secret"]).open(sealed, 10**12, once=False) is not None  # presence
    tampered = json.loads(sealed)
    tampered["m"]["x"] = 2
    assert NodeSeal(["secret"]).open(json.dumps(tampered), 1_000_000) is None
    for junk in ("", "[]", '{"m": 1}', json.dumps({"type": "command"}), "\ud800"):
        assert seal.open(junk, 1_000_000) is None
    assert seal.refused == 6  # the replay and five kinds of junk


async def test_forged_messages_in_redis_do_nothing(
    start_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    """Someone who can write to Redis (but has no master secret) publishes a command, a
    kick and a fake agent: no command reaches the agent, it stays, the fake is not listed."""
    node = await start_node(start_server, tmp_path, redis_url, "node-a")
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client, open_agent(node.agent_urls[0], "victim") as agent:
        session_id = (await node.gateway.registry.lookup("victim")).session_id  # type: ignore[union-attr]
        forged_command = {
            "type": "command",
            "requestId": "r-1",
            "replyTo": "attacker",
            "agentId": "victim",
            "command": "ping",
            "args": {},
            "timeoutMs": 5000,
            "requestedBy": {"address": "x", "credential": None, "label": None},
        }
        wrong_key = NodeSeal(["not the master secret"])
        for message in (forged_command, {"replace": "victim", "sessionId": session_id}):
            assert await client.publish("mws:node:node-a", json.dumps(message)) == 1
            sealed = wrong_key.seal(message, now_ms())
            assert await client.publish("mws:node:node-a", sealed) == 1
        fake = {"agentId": "ghost", "node": "node-a", "sessionId": "s"}
        await client.set("mws:agent:ghost", json.dumps(fake), px=60_000)
        await client.set("mws:agent:ghost2", wrong_key.seal(fake, now_ms()), px=60_000)
        await client.zadd("mws:agents", {"ghost": now_ms() + 60_000, "ghost2": now_ms() + 60_000})
        with trio.move_on_after(1) as waited:
            await agent.events()  # nothing comes: no command, no close
        assert waited.cancelled_caught
        assert agent.ws.closed is None
        async with httpx.AsyncClient(base_url=node.api_url) as http:
            listed = (await http.get("/api/websocket/agents")).json()
        assert [a["agentId"] for a in listed["agents"]] == ["victim"]
        assert node.gateway.registry.seal.refused >= 6  # type: ignore[attr-defined]


async def test_the_shared_window_fails_closed_after_a_bounded_time() -> None:
    dead: coredis.Redis[str] = coredis.Redis.from_url(
        "redis://127.0.0.1:1", decode_responses=True, connect_timeout=0.2
    )
    async with dead:
        closed = RedisReplayWindow(dead, fail_open_s=0)
        verdict = await closed.check("a", "n" * 16, now_ms(), now_ms())
        assert verdict is ReplayVerdict.UNAVAILABLE
        assert closed.refused == 1
        bounded = RedisReplayWindow(dead, fail_open_s=60)
        assert await bounded.check("a", "n" * 16, now_ms(), now_ms()) is ReplayVerdict.NEW
        assert bounded.unshared == 1
        # The local window still catches a replay on this node while Redis is away.
        verdict = await bounded.check("a", "n" * 16, now_ms(), now_ms())
        assert verdict is ReplayVerdict.DUPLICATE


@pytest.mark.parametrize("fail_open_s", [0.0])
async def test_frames_wait_with_1013_when_nonces_cannot_be_checked(
    start_server: StartServer, tmp_path: Path, redis_server: object, fail_open_s: float
) -> None:
    from ..conftest import RedisProcess  # noqa: PLC0415

    assert isinstance(redis_server, RedisProcess)
    node = await start_server(
        redis_url=redis_server.url, state_dir=tmp_path / "n", replay_fail_open_s=fail_open_s
    )
    async with open_agent(node.agent_urls[0], "agent-w") as agent:
        redis_server.stop()
        await agent.send(agent.session.heartbeat(now_ms()))
        from ..gateway.agents import close_code  # noqa: PLC0415

        assert await close_code(agent.ws) == 1013


async def test_redis_with_a_password(start_server: StartServer, tmp_path: Path) -> None:
    from ..conftest import RedisProcess  # noqa: PLC0415

    redis = RedisProcess(tmp_path, "--requirepass", "s3cret-pass")
    redis.start()
    try:
        url = f"redis://:s3cret-pass@127.0.0.1:{redis.port}"
        node = await start_server(redis_url=url, node_id="node-p", state_dir=tmp_path / "p")
        registry = node.gateway.registry
        client: coredis.Redis[str] = coredis.Redis.from_url(url, decode_responses=True)
        async with client, open_agent(node.agent_urls[0], "agent-p"):
            value = await client.get("mws:agent:agent-p")  # written through AUTH
            assert value is not None
            presence = registry.seal.open(value, now_ms(), once=False)  # type: ignore[attr-defined]
            assert presence["node"] == "node-p"
            assert registry.failures == 0  # type: ignore[attr-defined]
    finally:
        redis.stop()


def test_a_reload_rekeys_the_seal_and_still_opens_the_old() -> None:
    old, new = NodeSeal(["secret-one"]), NodeSeal(["secret-one"])
    sealed_before = old.seal({"n": 1}, 1_000)
    new.rekey(["secret-two", "secret-one"])  # the second reload of a rotation
    assert new.open(sealed_before, 1_000) == {"n": 1}
    sealed_after = new.seal({"n": 2}, 1_000)
    assert old.open(sealed_after, 1_000) is None  # why a rotation takes two reloads
    old.rekey(["secret-one", "secret-two"])  # the first reload, on the other node
    assert old.open(sealed_after, 1_000) == {"n": 2}


def test_a_presence_value_is_refused_after_its_sealed_expiry() -> None:
    seal = NodeSeal(["secret"])
    value = seal.seal({"agentId": "gone"}, 1_000_000, expires_ms=1_060_000)
    assert seal.open(value, 1_050_000, once=False, expiring=True) == {"agentId": "gone"}
    assert seal.open(value, 1_060_000 + WINDOW_MS, once=False, expiring=True) is not None
    assert seal.open(value, 1_060_001 + WINDOW_MS, once=False, expiring=True) is None
    # Without a sealed expiry (or with one changed) a presence value is not taken at all.
    plain = seal.seal({"agentId": "gone"}, 1_000_000)
    assert seal.open(plain, 1_000_000, once=False, expiring=True) is None
    moved = json.loads(value)
    moved["exp"] = 10**13
    assert seal.open(json.dumps(moved), 1_050_000, once=False, expiring=True) is None


async def test_a_departed_agents_presence_written_back_does_not_list_it(
    start_server: StartServer, tmp_path: Path, redis_url: str
) -> None:
    """Someone who can write to Redis copied an agent's sealed presence value while it was
    connected (here: the value the node wrote an hour ago) and writes it back after the
    agent left: it is not listed, nor found, as connected."""
    node = await start_node(start_server, tmp_path, redis_url, "node-a")
    registry = node.gateway.registry
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        async with open_agent(node.agent_urls[0], "leaver"):
            current = json.loads(await client.get("mws:agent:leaver") or "{}")
        hour_ago = now_ms() - 3_600_000
        old = registry.seal.seal(current["m"], hour_ago, expires_ms=hour_ago + 90_000)  # type: ignore[attr-defined]
        await client.set("mws:agent:leaver", old, px=600_000)
        await client.zadd("mws:agents", {"leaver": now_ms() + 600_000})
        async with httpx.AsyncClient(base_url=node.api_url) as http:
            listed = (await http.get("/api/websocket/agents")).json()
            found = await http.get("/api/websocket/agents/leaver")
        assert listed["agents"] == []
        assert found.json()["connected"] is False
        # The same value sealed now (unexpired) reads: the check is the expiry, nothing else.
        fresh = registry.seal.seal(current["m"], now_ms(), expires_ms=now_ms() + 90_000)  # type: ignore[attr-defined]
        assert registry._info(fresh) is not None  # type: ignore[attr-defined]
        assert registry._info(old) is None  # type: ignore[attr-defined]
