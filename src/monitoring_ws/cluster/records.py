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

from ..transports.records import CommandRecord

__all__ = ["RedisRecords"]

log = logging.getLogger("monitoring_ws.cluster")
REDIS_TIMEOUT_S = 1.0


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
