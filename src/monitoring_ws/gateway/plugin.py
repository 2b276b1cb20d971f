"""The WebSocket gateway as a monitoring-module plugin (entry point ``websocket``)."""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint

from ..protocol import Keyring
from ..transports import Transport
from ..transports.websocket import WebSocketTransport
from .config import GatewayConfig, load_config
from .gateway import Gateway
from .secrets import resolve_master_secrets
from .serve import Running, serve

if TYPE_CHECKING:
    from ..cluster.node import Cluster
    from ..host.plugins import HostContext

__all__ = ["WebSocketPlugin"]


class WebSocketPlugin:
    """Its settings table holds ``GatewayConfig`` fields (docs/gateway.md)."""

    name = "websocket"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.config: GatewayConfig = load_config(None, **settings)
        self.cluster: Cluster | None = None
        if self.config.redis_url is not None:  # one node of several (docs/scaling.md)
            from ..cluster.node import Cluster  # noqa: PLC0415 - coredis only for clusters

            self.cluster = Cluster.build(self.config)
            self.gateway = self.cluster.gateway(self.config)
        else:
            keyring = Keyring(
                resolve_master_secrets(self.config), seed_compatible=self.config.seed_compatible
            )
            self.gateway = Gateway(self.config, keyring)
        self._transport = WebSocketTransport(self.gateway)
        self._stop: Callable[[], None] | None = None
        self.running: Running | None = None
        self._done = trio.Event()

    def transports(self) -> Sequence[Transport]:
        return (self._transport,)

    def blueprints(self) -> Sequence[Blueprint]:
        return ()  # its routes are the server's own (/api/websocket/*, /api/agents)

    async def run(
        self, host: HostContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Serve the API and ``/agent`` (in the host's nursery) until ``shutdown``."""
        start = functools.partial(
            serve,
            self.config,
            handle_signals=False,
            gateway=self.gateway,
            transports=host.transports,
            blueprints=host.blueprints,
        )
        async with contextlib.AsyncExitStack() as stack:
            if self.cluster is not None:
                await stack.enter_async_context(self.cluster.running())
            running: Running = await host.nursery.start(start)
            self.running = running
            self._stop = running.stop
            task_status.started()
            await self._done.wait()
            await self.gateway.closed.wait()  # its last writes to Redis come first

    async def shutdown(self) -> None:
        """Agents get 1001 and a retry hint; the listeners stop."""
        if self._stop is not None:
            self._stop()
        self._done.set()
