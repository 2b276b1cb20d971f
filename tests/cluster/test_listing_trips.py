"""A cluster-wide agent listing costs the same Redis round trips for 20 agents as for
2,500: the index's live ids, then every value in one pipeline (a real redis-server)."""

from __future__ import annotations

from typing import Any

import attrs
import coredis

from monitoring_ws.cluster.presence import RedisRegistry
from monitoring_ws.cluster.sealing import NodeSeal
from monitoring_ws.host.presence import AgentInfo

from ..gateway.agents import now_ms


@attrs.define
class FakeConnection:
    agent_id: str
    node: str

    def info(self) -> AgentInfo:
        return AgentInfo(
            self.agent_id, f"s-{self.agent_id}", "h", None, "1", ("ping",), (), "x:1", 0, 0, "a"
        )

    def replace(self) -> None:
        raise AssertionError("nothing replaces these")


class CountingClient:
    """A coredis client that counts round trips: each command awaited, each pipeline."""

    def __init__(self, client: coredis.Redis[str]) -> None:
        self.client, self.trips = client, 0

    def __getattr__(self, name: str) -> Any:
        found = getattr(self.client, name)
        if name in {"pipeline", "zrange", "mget", "scan", "get", "hgetall"}:
            self.trips += 1
        return found


async def test_a_listing_is_two_round_trips_whatever_the_fleet(redis_url: str) -> None:
    seal = NodeSeal(["a cluster secret"])
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        holder: RedisRegistry[Any] = RedisRegistry(client, "a", seal, ttl_ms=60_000)
        counting = CountingClient(client)
        reader: RedisRegistry[Any] = RedisRegistry(
            counting,  # type: ignore[arg-type]
            "b",
            seal,
            ttl_ms=60_000,
        )
        trips = {}
        registered = 0
        for fleet in (20, 2_500):
            while registered < fleet:
                await holder.register(FakeConnection(f"agent-{registered:05d}", "a"))
                registered += 1
            counting.trips = 0
            listed = await reader.list()
            trips[fleet] = counting.trips
            assert len(listed) == fleet
        assert trips == {20: 2, 2_500: 2}
        assert holder.failures == 0
        # An agent that leaves leaves the index too; one whose key expired is skipped.
        gone = FakeConnection("agent-00000", "a")
        await holder.unregister(gone)
        await client.delete(["mws:agent:agent-00001"])
        ids = {info.agent_id for info in await reader.list()}
        assert "agent-00000" not in ids
        assert "agent-00001" not in ids
        assert len(ids) == 2_498
        assert await client.zscore("mws:agents", "agent-00000") is None
        # Entries of a node that died expire with its keys: a refresh prunes them.
        await client.zadd("mws:agents", {"agent-dead": now_ms() - 1})
        await holder.refresh()
        assert await client.zscore("mws:agents", "agent-dead") is None
