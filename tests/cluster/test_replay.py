"""The replay window nodes share through a real redis-server."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import coredis
import pytest
import trio

from monitoring_ws.cluster import RedisReplayWindow
from monitoring_ws.protocol import MessageType, ReplayVerdict

from ..conftest import StartServer
from ..gateway.agents import now_ms, open_agent
from ..support.observe import counters
from .helpers import start_node

NOW = 1_764_100_000_000


@pytest.fixture
async def redis(redis_url: str) -> AsyncIterator[coredis.Redis[str]]:
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        yield client


async def test_a_nonce_accepted_on_one_node_is_a_duplicate_on_another(
    redis: coredis.Redis[str],
) -> None:
    node_a, node_b = RedisReplayWindow(redis), RedisReplayWindow(redis)
    now = now_ms()  # Redis expires keys on its own (real) clock
    assert await node_a.check("agent", "nonce-0000000001", now, now) is ReplayVerdict.NEW
    assert await node_b.check("agent", "nonce-0000000001", now, now) is ReplayVerdict.DUPLICATE
    assert await node_a.check("agent", "nonce-0000000001", now, now) is ReplayVerdict.DUPLICATE
    # Per agent: the same nonce from another agent is new.
    assert await node_b.check("other", "nonce-0000000001", now, now) is ReplayVerdict.NEW
    assert await node_a.check("agent", "nonce-0000000002", now - 400_000, now) is (
        ReplayVerdict.STALE
    )


async def test_redis_forgets_a_nonce_when_it_could_no_longer_be_fresh(
    redis: coredis.Redis[str],
) -> None:
    window = RedisReplayWindow(redis, window_ms=300_000)
    now = now_ms()
    await window.check("agent", "nonce-0000000003", now, now)
    ttl = await redis.pttl("mws:nonce:agent:nonce-0000000003")
    assert 295_000 < ttl <= 300_000


async def test_without_redis_the_local_window_decides() -> None:
    unreachable: coredis.Redis[str] = coredis.Redis(
        "127.0.0.1", 1, decode_responses=True, connect_timeout=0.2
    )
    async with unreachable:
        window = RedisReplayWindow(unreachable)
        assert await window.check("agent", "nonce-0000000004", NOW, NOW) is ReplayVerdict.NEW
        assert await window.check("agent", "nonce-0000000004", NOW, NOW) is (
            ReplayVerdict.DUPLICATE
        )
    assert window.unshared == 1


async def test_a_frame_replayed_to_another_node_is_dropped(
    redis_url: str, start_server: StartServer, tmp_path: Path
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "a")
    node_b = await start_node(start_server, tmp_path, redis_url, "b")
    async with open_agent(node_a.agent_urls[0], "roamer") as agent:
        frame = agent.session.message(MessageType.METRICS, {"cpu": 42}, now_ms())
        await agent.send(frame)
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()  # the heartbeat's answer: the metrics were handled first
    # An attacker (or a confused proxy) replays the captured frame to the other node.
    async with open_agent(node_b.agent_urls[0], "roamer") as agent:
        await agent.send(frame)
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()
    assert (await counters(node_a.api_url))["duplicates"] == 0
    assert (await counters(node_b.api_url))["duplicates"] == 1
    # Node B never processed it (what it shows of roamer's metrics comes from node A).
    assert await node_b.running.telemetry.memory.latest_metrics("roamer") is None


async def test_batched_checks_agree_with_single_ones(redis: coredis.Redis[str]) -> None:
    # Redis's answer is waited for as long as a hang takes: a loaded machine answering
    # after the production 0.5 s would make each node decide alone (a different test).
    node_a = RedisReplayWindow(redis, timeout_s=60)
    node_b = RedisReplayWindow(redis, timeout_s=60)
    now = now_ms()
    verdicts: dict[tuple[str, int], ReplayVerdict] = {}

    async def check(window: RedisReplayWindow, name: str, n: int) -> None:
        verdicts[(name, n)] = await window.check("agent", f"nonce-{n:012d}", now, now)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(node_a.run)
        nursery.start_soon(node_b.run)
        await trio.sleep(0)
        async with trio.open_nursery() as checks:  # 200 at once on each node, same nonces
            for n in range(200):
                checks.start_soon(check, node_a, "a", n)
                checks.start_soon(check, node_b, "b", n)
        nursery.cancel_scope.cancel()
    for n in range(200):  # each nonce accepted on exactly one node
        pair = {verdicts[("a", n)], verdicts[("b", n)]}
        assert pair == {ReplayVerdict.NEW, ReplayVerdict.DUPLICATE}, n
    assert node_a.unshared == node_b.unshared == 0
    # After the batcher stopped, a check goes on its own.
    assert await node_a.check("agent", "nonce-000000000000", now, now) is ReplayVerdict.DUPLICATE
