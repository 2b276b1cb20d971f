"""Jobs every node of a cluster reads, in Redis, so that a job whose node dies is carried
on by another (the host's ``JobStorage``; docs/scaling.md).

``{prefix}job:{jobId}`` holds the job (its spec, who asked, its state), and
``{prefix}job:{jobId}:targets`` a hash of its agents by index, each value sealed with the
cluster key: a job tells nodes what to send to which agent, so whoever can write to Redis
must not be able to change it (a value that does not open is refused). ``{prefix}jobs`` is
every job by its createdAt, ``{prefix}jobs:active`` those that run. A node claims each job
it runs with ``{prefix}job:{jobId}:owner`` (its name, expiring after ``LEASE_MS`` unless
renewed); another node takes a job over once that claim has lapsed.
"""

from __future__ import annotations

import logging
from collections.abc import Collection
from typing import Any

import anyio
import coredis
import trio
from coredis.exceptions import RedisError
from coredis.response.types import ScoredMember
from coredis.tokens import PureToken

from ..clock import wall_ms
from ..host.jobs.store import Job, Target
from .sealing import NodeSeal

__all__ = ["LEASE_MS", "RedisJobStore"]

log = logging.getLogger("monitoring_ws.cluster")
#: A node's claim on a job lapses after this long without renewal (renewed every 3 s).
LEASE_MS = 10_000
REDIS_TIMEOUT_S = 5.0
# coredis raises anyio's ClosedResourceError when its connection closed under it.
_UNAVAILABLE = (RedisError, OSError, trio.TooSlowError, anyio.ClosedResourceError)


class RedisJobStore:
    """Jobs and their agents in Redis, sealed; claimed per node."""

    def __init__(
        self,
        client: coredis.Redis[str],
        node: str,
        seal: NodeSeal,
        *,
        retention_ms: int = 7 * 86_400_000,
        prefix: str = "mws:",
    ) -> None:
        self.client, self.node, self.seal = client, node, seal
        self.retention_ms, self.prefix = retention_ms, prefix

    def _job(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}"

    def _targets(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:targets"

    def _owner(self, job_id: str) -> str:
        return f"{self.prefix}job:{job_id}:owner"

    @property
    def _index(self) -> str:
        return f"{self.prefix}jobs"

    @property
    def _active(self) -> str:
        return f"{self.prefix}jobs:active"

    def _sealed_target(self, job_id: str, target: Target) -> str:
        # Bound to its job and its place: a value moved to another field does not open.
        message = {"jobId": job_id, "index": target.index, **target.to_json()}
        return self.seal.seal(message, wall_ms())

    async def create(self, job: Job) -> None:
        with trio.fail_after(REDIS_TIMEOUT_S):
            async with self.client.pipeline(transaction=True) as pipe:
                pipe.set(self._owner(job.job_id), self.node, px=LEASE_MS)
                self._write(pipe, job, job.targets)
                pipe.zadd(self._index, {job.job_id: job.created_ms})
                pipe.sadd(self._active, [job.job_id])

    async def save(self, job: Job, targets: list[Target]) -> None:
        with trio.fail_after(REDIS_TIMEOUT_S):
            async with self.client.pipeline(transaction=True) as pipe:
                self._write(pipe, job, targets)
                if job.state.ended:
                    pipe.srem(self._active, [job.job_id])
                    pipe.delete([self._owner(job.job_id)])
                    pipe.pexpire(self._job(job.job_id), self.retention_ms)
                    pipe.pexpire(self._targets(job.job_id), self.retention_ms)
                    pipe.zremrangebyscore(self._index, float("-inf"), wall_ms() - self.retention_ms)

    def _write(self, pipe: Any, job: Job, targets: list[Target]) -> None:
        pipe.set(self._job(job.job_id), self.seal.seal(job.row(), wall_ms()))
        if targets:
            values = {str(t.index): self._sealed_target(job.job_id, t) for t in targets}
            pipe.hset(self._targets(job.job_id), values)

    async def get(self, job_id: str) -> Job | None:
        with trio.fail_after(REDIS_TIMEOUT_S):
            text = await self.client.get(self._job(job_id))
            if text is None:
                return None
            sealed = await self.client.hgetall(self._targets(job_id))
        row = self.seal.open(text, wall_ms(), once=False)
        if row is None or row.get("jobId") != job_id:
            log.warning("job %s in Redis does not open with the cluster key: ignored", job_id)
            return None
        targets: list[Target] = []
        for index, value in sealed.items():
            opened = self.seal.open(value, wall_ms(), once=False)
            place = int(index) if index.isdigit() else -1
            if opened is None or (opened.get("jobId"), opened.get("index")) != (job_id, place):
                log.warning("an agent of job %s in Redis does not open: ignored", job_id)
                return None
            targets.append(Target.from_json(int(index), opened))
        targets.sort(key=lambda target: target.index)
        return Job.from_row(row, targets)

    async def unfinished(self) -> list[Job]:
        """At start: this node's jobs (a restart) and those nobody holds."""
        return await self._claim(mine_too=True)

    async def orphans(self) -> list[Job]:
        return await self._claim(mine_too=False)

    async def _claim(self, *, mine_too: bool) -> list[Job]:
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                active = await self.client.smembers(self._active)
        except _UNAVAILABLE as exc:
            log.warning("cannot read the cluster's jobs (%s)", exc)
            return []
        claimed = []
        for job_id in sorted(active):
            owner_key = self._owner(job_id)
            try:
                with trio.fail_after(REDIS_TIMEOUT_S):
                    mine = mine_too and await self.client.get(owner_key) == self.node
                    if not mine and not await self.client.set(
                        owner_key, self.node, px=LEASE_MS, condition=PureToken.NX
                    ):
                        continue  # another node holds it
                    job = await self.get(job_id)
            except _UNAVAILABLE as exc:
                log.warning("cannot claim job %s (%s)", job_id, exc)
                continue
            if job is not None and not job.state.ended:
                claimed.append(job)
        return claimed

    async def keep(self, job_ids: Collection[str]) -> set[str]:
        """Renew this node's claims; a job another node holds now is given up."""
        lost: set[str] = set()
        for job_id in job_ids:
            owner_key = self._owner(job_id)
            try:
                with trio.fail_after(REDIS_TIMEOUT_S):
                    owner = await self.client.get(owner_key)
                    if owner not in {None, self.node}:
                        lost.add(job_id)
                        continue
                    await self.client.set(owner_key, self.node, px=LEASE_MS)
            except _UNAVAILABLE as exc:
                log.warning("cannot renew the claim on job %s (%s)", job_id, exc)
        return lost

    async def summaries(self, limit: int, before: tuple[int, str] | None) -> list[dict[str, Any]]:
        """Jobs newest first (``before``: created before that job)."""
        top = float("inf") if before is None else before[0]
        found: list[dict[str, Any]] = []
        with trio.fail_after(REDIS_TIMEOUT_S):
            scored = await self.client.zrange(
                self._index,
                top,
                float("-inf"),
                sortby=PureToken.BYSCORE,
                rev=True,
                withscores=True,
                offset=0,
                count=limit + 100,
            )
            for entry in scored:
                if not isinstance(entry, ScoredMember):
                    continue
                job_id, created = str(entry.member), int(entry.score)
                if before is not None and (created, job_id) >= before:
                    continue
                text = await self.client.get(self._job(job_id))
                row = None if text is None else self.seal.open(text, wall_ms(), once=False)
                if row is not None:
                    found.append(row["summary"])
                if len(found) == limit:
                    break
        return found

    def close(self) -> None:
        return None
