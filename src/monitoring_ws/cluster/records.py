"""Command records every node can read: each node mirrors the records it commits to Redis.

``{prefix}cmd:{commandId}`` holds the record's JSON plus ``node`` (the node that holds the
agent and keeps the authoritative copy in its state database), kept as long as the
record's retention. Mirroring failures are logged and counted; the local record is what
counts, and the node's own ``GET`` still answers for it.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import anyio
import coredis
import trio
from coredis.exceptions import RedisError
from coredis.tokens import PureToken

from ..clock import wall_ms
from ..transports.records import CommandRecord, RecordQuery

__all__ = ["RedisRecords"]

log = logging.getLogger("monitoring_ws.cluster")
REDIS_TIMEOUT_S = 1.0
#: History reads at most this many ids a page, this many at a time.
SCAN_LIMIT, SCAN_CHUNK = 10_000, 500


class RedisRecords:
    """The shared copy of every node's command records."""

    def __init__(
        self, client: coredis.Redis[str], node: str, *, retention_ms: int, prefix: str = "mws:"
    ) -> None:
        self.client = client
        self.node = node
        self.retention_ms = retention_ms
        self.prefix = prefix
        self.failures = 0

    def _key(self, command_id: str) -> str:
        return f"{self.prefix}cmd:{command_id}"

    @property
    def _index(self) -> str:
        """Every copied record's id, scored by its createdAt (history across nodes)."""
        return f"{self.prefix}cmds"

    async def mirror(self, rows: list[tuple[str, str]]) -> None:
        """Copy committed records (``(commandId, record JSON)``) to Redis."""
        if not rows:
            return
        try:
            with trio.fail_after(REDIS_TIMEOUT_S * 5):
                async with self.client.pipeline(transaction=False) as pipe:
                    for command_id, text in rows:
                        value = {**json.loads(text), "node": self.node}
                        pipe.set(self._key(command_id), json.dumps(value), px=self.retention_ms)
                        pipe.zadd(self._index, {command_id: int(value["createdAt"])})
                    oldest = wall_ms() - self.retention_ms
                    pipe.zremrangebyscore(self._index, float("-inf"), oldest)
        # coredis raises anyio's ClosedResourceError when its connection closed under it
        # (Redis lost, or the node shutting down): the copy is best effort either way.
        except (RedisError, OSError, trio.TooSlowError, anyio.ClosedResourceError) as exc:
            self.failures += 1
            if self.failures in (1, 10) or self.failures % 500 == 0:
                log.warning("could not mirror command records to Redis (%s)", exc)

    async def get(self, command_id: str) -> tuple[CommandRecord, str] | None:
        """A record another node keeps, and that node's name."""
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                text = await self.client.get(self._key(command_id))
        except (RedisError, OSError, trio.TooSlowError):
            return None
        if text is None:
            return None
        value: dict[str, Any] = json.loads(text)
        return CommandRecord.from_json(value), str(value.get("node"))

    async def history(self, query: RecordQuery) -> list[dict[str, Any]] | None:
        """A page of every node's records, newest first; None when Redis cannot say
        (the caller answers with this node's own). Reads at most ``SCAN_LIMIT`` ids."""
        top = float("inf") if query.until_ms is None else query.until_ms
        if query.before is not None:
            top = min(top, query.before[0])
        bottom = 0 if query.since_ms is None else query.since_ms
        found: list[dict[str, Any]] = []
        offset = 0
        try:
            with trio.fail_after(REDIS_TIMEOUT_S * 5):
                while len(found) < query.limit and offset < SCAN_LIMIT:
                    ids = await self.client.zrange(
                        self._index,
                        top,
                        bottom,
                        sortby=PureToken.BYSCORE,
                        rev=True,
                        offset=offset,
                        count=SCAN_CHUNK,
                    )
                    if not ids:
                        break
                    offset += len(ids)
                    texts = await self.client.mget([self._key(str(i)) for i in ids])
                    records = [json.loads(text) for text in texts if text is not None]
                    found += [r for r in records if _matches(r, query)]
        # RuntimeError: coredis, when its pool already closed (the node shutting down).
        except (RedisError, OSError, trio.TooSlowError, anyio.ClosedResourceError, RuntimeError):
            return None
        found.sort(key=lambda r: (r["createdAt"], r["commandId"]), reverse=True)
        return found[: query.limit]


def _matches(record: dict[str, Any], query: RecordQuery) -> bool:
    asked = record.get("requestedBy") or {}
    checks = (
        query.agent_id in (None, record.get("agentId")),
        query.command in (None, record.get("command")),
        query.state is None or query.state.value == record.get("state"),
        query.requested_by in (None, asked.get("label"), asked.get("credential")),
        query.before is None or (record["createdAt"], record["commandId"]) < query.before,
    )
    return all(checks)
