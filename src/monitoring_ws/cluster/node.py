"""A server node's cluster parts: presence, the replay window, command routing, command
records and latest metrics shared between nodes through Redis. The websocket plugin
builds its gateway on them (websocket/plugin.py)."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator
from typing import Generic
from urllib.parse import urlsplit

import attrs
import coredis
import trio
from coredis.exceptions import RedisError

from ..host.config import ClusterSettings
from ..host.plugins import StartupError
from ..host.presence import C
from .jobs import RedisJobStore
from .presence import RedisRegistry
from .records import RedisRecords
from .replay import RedisReplayWindow
from .routing import LocalCommands, NodeRouter
from .sealing import NodeSeal
from .telemetry import RedisLatestMetrics

__all__ = ["Cluster", "ClusterError", "default_node_id", "redacted"]

#: How long start-up waits for Redis before it gives up with a clear error.
CONNECT_TIMEOUT_S = 5.0


class ClusterError(StartupError):
    """The cluster cannot work (Redis unreachable at start); the message says what to do."""


def default_node_id(worker_index: int | None = None) -> str:
    """``host:pid`` (unique per process), or ``host:w<i>`` for worker i (kept by restarts)."""
    if worker_index is not None:
        return f"{socket.gethostname()}:w{worker_index}"
    return f"{socket.gethostname()}:{os.getpid()}"


def redacted(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return parts._replace(netloc=netloc).geturl()


@attrs.frozen
class Cluster(Generic[C]):
    """This node's Redis-backed parts, for a gateway whose connections are ``C``. ``build``
    does no I/O; ``running`` connects and keeps them working."""

    client: coredis.Redis[str]
    #: The Redis URL without its password, for messages.
    where: str
    node: str
    registry: RedisRegistry[C]
    window: RedisReplayWindow
    router: NodeRouter
    records: RedisRecords
    #: Each agent's latest metrics, for every node to read (a sink and a reader).
    latest_metrics: RedisLatestMetrics
    #: Jobs every node reads, so that another node carries on those of a node that died.
    jobs: RedisJobStore

    @classmethod
    def build(
        cls,
        cluster: ClusterSettings,
        master_secrets: tuple[str, ...],
        *,
        presence_ttl_ms: int,
        record_retention_ms: int,
        metrics_ttl_ms: int,
    ) -> Cluster[C]:
        """Every part, each given what it uses when it is made: an agent's presence lives
        ``presence_ttl_ms`` unless refreshed; records and latest metrics are kept so long."""
        assert cluster.redis_url is not None  # noqa: S101 - the caller checked
        client: coredis.Redis[str] = coredis.Redis.from_url(
            cluster.redis_url, decode_responses=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        node = cluster.node_id or default_node_id(cluster.worker_index)
        seal = NodeSeal(master_secrets)
        registry: RedisRegistry[C] = RedisRegistry(client, node, seal, ttl_ms=presence_ttl_ms)
        window = RedisReplayWindow(client, fail_open_s=cluster.replay_fail_open_s)
        router = NodeRouter(client, node, registry)
        records = RedisRecords(client, node, retention_ms=record_retention_ms)
        latest = RedisLatestMetrics(client, seal, ttl_ms=metrics_ttl_ms)
        where = redacted(cluster.redis_url)
        jobs = RedisJobStore(client, node, seal)
        return cls(client, where, node, registry, window, router, records, latest, jobs)

    @contextlib.asynccontextmanager
    async def running(self, local: LocalCommands) -> AsyncIterator[None]:
        """Connected and working inside the block (a ``ClusterError`` when Redis does not
        answer); ``local`` serves the commands other nodes send here. Run the gateway
        inside it, so that its last writes to Redis (unregistering its agents) happen
        before the connection closes."""
        async with self.client:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    await self.client.ping()
            except (RedisError, OSError, trio.TooSlowError) as exc:
                raise ClusterError(
                    f"cannot reach Redis at {self.where} ({type(exc).__name__}: {exc}); start "
                    "it, fix redis_url, or run without it for a single node"
                ) from None
            handlers = {"command": self.router.on_command, "result": self.router.on_result}
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.registry.run, handlers)
                nursery.start_soon(self.router.run, local)
                nursery.start_soon(self.window.run)
                yield
                nursery.cancel_scope.cancel()
