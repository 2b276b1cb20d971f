"""A server node of a cluster: the gateway with presence, the replay window and command
routing between nodes in Redis."""

from __future__ import annotations

import os
import socket
from collections.abc import Sequence
from urllib.parse import urlsplit

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

__all__ = ["ClusterError", "default_node_id", "redacted", "serve_node"]

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


async def serve_node(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
    handle_signals: bool = True,
    transports: Sequence[Transport] | None = None,
    blueprints: Sequence[Blueprint] = (),
) -> None:
    """``serve``, as one node of the cluster behind ``config.redis_url``."""
    url = config.redis_url
    assert url is not None  # noqa: S101 - the caller checked
    client: coredis.Redis[str] = coredis.Redis.from_url(
        url, decode_responses=True, connect_timeout=CONNECT_TIMEOUT_S
    )
    async with client:
        try:
            with trio.fail_after(CONNECT_TIMEOUT_S):
                await client.ping()
        except (RedisError, OSError, trio.TooSlowError) as exc:
            raise ClusterError(
                f"cannot reach Redis at {redacted(url)} ({type(exc).__name__}: {exc}); start "
                "it, fix redis_url, or run without it for a single node"
            ) from None
        node = config.node_id or default_node_id(config.worker_index)
        registry: RedisRegistry[AgentConnection] = RedisRegistry(
            client, node, ttl_ms=3 * config.heartbeat_interval_ms
        )
        keyring = Keyring(resolve_master_secrets(config), seed_compatible=config.seed_compatible)
        window = RedisReplayWindow(client)
        gateway = Gateway(config, keyring, registry=registry, shared_replay=window, node=node)
        router = NodeRouter(client, node, registry)
        router.local = WebSocketTransport(gateway)
        registry.handlers["command"] = router.on_command
        registry.handlers["result"] = router.on_result
        gateway.remote = router
        shared = RedisRecords(client, node, retention_ms=config.command_retention_s * 1000)
        gateway.store.on_commit = shared.mirror
        gateway.commands.elsewhere = shared.get
        async with trio.open_nursery() as nursery:
            nursery.start_soon(registry.run)
            nursery.start_soon(router.run)
            nursery.start_soon(window.run)
            await serve(
                config,
                task_status=task_status,
                handle_signals=handle_signals,
                gateway=gateway,
                transports=transports,
                blueprints=blueprints,
            )
            nursery.cancel_scope.cancel()
