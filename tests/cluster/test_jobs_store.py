"""The cluster's job store against a real redis-server: claims, take-overs, and values
someone with Redis access changed."""

from __future__ import annotations

import coredis

from monitoring_ws.cluster.jobs import RedisJobStore
from monitoring_ws.cluster.sealing import NodeSeal
from monitoring_ws.host.jobs import Job, Target, parse_job
from monitoring_ws.transports import Requester

from ..conftest import SECRET


def job_of(agents: list[str]) -> Job:
    spec = parse_job(
        {"selector": {"glob": "*"}, "command": "ping"},
        default_timeout_ms=1000,
        max_timeout_ms=60_000,
    )
    targets = [Target(index, agent) for index, agent in enumerate(agents)]
    return Job("j0123456789abcdef", spec, Requester("test"), 1_700_000_000_000, targets)


async def test_claims_and_take_overs(redis_url: str) -> None:
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        node_a = RedisJobStore(client, "a", NodeSeal([SECRET]))
        node_b = RedisJobStore(client, "b", NodeSeal([SECRET]))
        job = job_of(["web-1", "web-2"])
        await node_a.create(job)
        assert await node_b.orphans() == []  # a holds its claim
        assert await node_a.keep([job.job_id]) == set()
        await client.delete([f"mws:job:{job.job_id}:owner"])  # a stopped renewing it
        [taken] = await node_b.orphans()
        assert [t.agent_id for t in taken.targets] == ["web-1", "web-2"]
        assert await node_a.keep([job.job_id]) == {job.job_id}  # b holds it now: a lets go
        assert [s["jobId"] for s in await node_b.summaries(10, None)] == [job.job_id]


async def test_values_changed_in_redis_are_refused(redis_url: str) -> None:
    client: coredis.Redis[str] = coredis.Redis.from_url(redis_url, decode_responses=True)
    async with client:
        store = RedisJobStore(client, "a", NodeSeal([SECRET]))
        job = job_of(["web-1", "db-1"])
        await store.create(job)
        assert await store.get(job.job_id) is not None
        targets = f"mws:job:{job.job_id}:targets"
        first = await client.hget(targets, "0")
        assert first is not None
        await client.hset(targets, {"1": first})  # web-1's value moved to db-1's place
        assert await store.get(job.job_id) is None
        await store.create(job)
        await client.set(f"mws:job:{job.job_id}", '{"m": {"jobId": "forged"}}')
        assert await store.get(job.job_id) is None
        other = RedisJobStore(client, "b", NodeSeal(["another-secret-entirely"]))
        await store.create(job)
        assert await other.get(job.job_id) is None  # not this cluster's key
