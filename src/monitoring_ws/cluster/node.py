"""A server node of a cluster: the gateway with presence, the replay window and command
routing between nodes in Redis."""

from __future__ import annotations

import contextlib
import os
import socket
from collections.abc import AsyncIterator, Callable, Sequence
from urllib.parse import urlsplit

import attrs
import coredis
import trio
from coredis.exceptions import RedisError
from quart import Blueprint

from ..gateway.config import GatewayConfig
from ..gateway.connection import AgentConnection
from ..gateway.gateway import Gateway
from ..gateway.secrets import resolve_master_secrets
from ..gateway.serve import Running, serve
from ..protocol import Keyring
from ..transports import Transport
from ..transports.websocket import WebSocketTransport
from .presence import RedisRegistry
from .records import RedisRecords
from .replay import RedisReplayWindow
from .routing import NodeRouter
from .sealing import NodeSeal

__all__ = ["Cluster", "ClusterError", "default_node_id", "redacted", "serve_node"]

#: How long start-up waits for Redis before it gives up with a clear error.
CONNECT_TIMEOUT_S = 5.0


class ClusterError(Exception):
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


@attrs.define
class Cluster:
    """This node's Redis-backed parts. ``build`` does no I/O; ``running`` connects and
    keeps them working."""

    client: coredis.Redis[str]
    #: The node's master secrets: the gateway's keyring and the cluster key come from them.
    master_secrets: tuple[str, ...] = attrs.field(repr=False)
    #: The Redis URL without its password, for messages.
    where: str
    node: str
    registry: RedisRegistry[AgentConnection]
    window: RedisReplayWindow
    router: NodeRouter
    records: RedisRecords

    @classmethod
    def build(cls, config: GatewayConfig) -> Cluster:
        assert config.redis_url is not None  # noqa: S101 - the caller checked
        client: coredis.Redis[str] = coredis.Redis.from_url(
            config.redis_url, decode_responses=True, connect_timeout=CONNECT_TIMEOUT_S
        )
        node = config.node_id or default_node_id(config.worker_index)
        secrets = resolve_master_secrets(config)
        registry: RedisRegistry[AgentConnection] = RedisRegistry(
            client, node, NodeSeal(secrets), ttl_ms=3 * config.heartbeat_interval_ms
        )
        return cls(
            client=client,
            master_secrets=secrets,
            where=redacted(config.redis_url),
            node=node,
            registry=registry,
            window=RedisReplayWindow(client, fail_open_s=config.replay_fail_open_s),
            router=NodeRouter(client, node, registry),
            records=RedisRecords(client, node, retention_ms=config.command_retention_s * 1000),
        )

    def gateway(self, config: GatewayConfig) -> Gateway:
        """A gateway whose presence, replay window, commands and records are shared."""
        keyring = Keyring(self.master_secrets, seed_compatible=config.seed_compatible)
        gateway = Gateway(
            config, keyring, registry=self.registry, shared_replay=self.window, node=self.node
        )
        self.router.local = WebSocketTransport(gateway)
        self.registry.handlers["command"] = self.router.on_command
        self.registry.handlers["result"] = self.router.on_result
        gateway.remote = self.router
        gateway.store.on_commit = self.records.mirror
        gateway.commands.elsewhere = self.records.get
        return gateway

    @contextlib.asynccontextmanager
    async def running(self) -> AsyncIterator[None]:
        """Connected and working inside the block (a ``ClusterError`` when Redis does not
        answer); serve the gateway inside it, so that the gateway's last writes to Redis
        (unregistering its agents) happen before the connection closes."""
        async with self.client:
            try:
                with trio.fail_after(CONNECT_TIMEOUT_S):
                    await self.client.ping()
            except (RedisError, OSError, trio.TooSlowError) as exc:
                raise ClusterError(
                    f"cannot reach Redis at {self.where} ({type(exc).__name__}: {exc}); start "
                    "it, fix redis_url, or run without it for a single node"
                ) from None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self.registry.run)
                nursery.start_soon(self.router.run)
                nursery.start_soon(self.window.run)
                yield
                nursery.cancel_scope.cancel()


async def serve_node(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
    handle_signals: bool = True,
    transports: Sequence[Transport] | None = None,
    blueprints: Sequence[Blueprint] = (),
    reload: Callable[[], GatewayConfig] | None = None,
) -> None:
    """``serve``, as one node of the cluster behind ``config.redis_url``."""
    cluster = Cluster.build(config)
    gateway = cluster.gateway(config)
    async with cluster.running():
        await serve(
            config,
            task_status=task_status,
            handle_signals=handle_signals,
            gateway=gateway,
            transports=transports,
            blueprints=blueprints,
            reload=reload,
        )
