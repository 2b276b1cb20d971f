"""The WebSocket gateway as a plugin of the monitoring module (entry point ``websocket``),
and the one place where the gateway and (for several nodes) its cluster parts are put
together: neither package imports the other; the cluster's parts fill the gateway's ports
(gateway/links.py).

It contributes the ``websocket`` transport, the raw-ASGI ``/agent`` endpoint, the
``/api/websocket/*`` blueprint, and its background work (commits, acks, deadlines; in a
cluster the Redis parts too). Its ``[plugins.websocket]`` table holds the protocol
settings of docs/gateway.md; ``[server]`` and ``[cluster]`` come from the host.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio
from quart import Blueprint

from ..configbase import parse_hostport
from ..gateway.agent_config import curl_pin
from ..gateway.blueprint import COMMANDS_PATH, websocket_blueprint
from ..gateway.config import GatewayConfig, gateway_config
from ..gateway.connection import AgentConnection
from ..gateway.enroll import ENROLL_PATH, EnrollEndpoint
from ..gateway.gateway import AGENT_PATH, Gateway
from ..gateway.metrics import GatewayCollector
from ..gateway.openapi import websocket_paths
from ..gateway.releases import INSTALL_PATH, RELEASES_PREFIX, ReleasesEndpoint, ReleaseShelf
from ..gateway.secrets import resolve_master_secrets
from ..gateway.transport import WebSocketTransport
from ..host.metrics import MetricsCollector
from ..host.plugins import (
    AsgiHandler,
    CommandRoute,
    HostContext,
    PluginBase,
    PluginContext,
    WebSocketRoute,
)
from ..host.telemetry import TelemetryHistory, TelemetryReader, TelemetrySink
from ..protocol import Keyring
from ..transports import Transport

if TYPE_CHECKING:
    from ..cluster.node import Cluster
    from ..host.command_service import CommandService
    from ..host.jobs.store import JobStorage

__all__ = ["WebSocketPlugin"]

log = logging.getLogger("monitoring_ws.gateway")

#: How long agents get to take their 1001 at shutdown.
AGENT_CLOSE_TIMEOUT_S = 5.0


class WebSocketPlugin(PluginBase):
    """Built once, complete: the gateway (alone, or as a cluster node), its transport and
    its routes."""

    name = "websocket"

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        self._context = context
        self.config = gateway_config(settings, context.server, context.cluster)
        secrets = resolve_master_secrets(self.config)
        # What the host shares, handed to the gateway whichever way it is built.
        host: dict[str, Any] = {
            "sink": context.telemetry,
            "clock": context.clock,
            "metrics": context.metrics,
            "audit": context.audit,
            "events": context.events,
        }
        self.cluster: Cluster[AgentConnection] | None = None
        shared: dict[str, Any] = {}
        if self.config.cluster.redis_url is not None:  # one node of several (docs/scaling.md)
            from ..cluster.node import Cluster  # noqa: PLC0415 - coredis only for clusters

            config = self.config
            self.cluster = Cluster[AgentConnection].build(
                config.cluster,
                secrets,
                presence_ttl_ms=3 * config.heartbeat_interval_ms,
                record_retention_ms=config.command_retention_s * 1000,
                metrics_ttl_ms=config.telemetry_retention_s * 1000,
            )
            # The gateway's ports (links.py), filled by the cluster's Redis parts.
            shared = {
                "registry": self.cluster.registry,
                "shared_replay": self.cluster.window,
                "node": self.cluster.node,
                "remote": self.cluster.router,
                "records": self.cluster.records,
            }
        keyring = Keyring(secrets, seed_compatible=self.config.seed_compatible)
        self.gateway = Gateway(self.config, keyring, **host, **shared)
        self.transport = WebSocketTransport(self.gateway)
        self._enroll = EnrollEndpoint(
            self.gateway.enrollments,
            lambda: self.gateway.keyring.master_secrets[0],
            context.clock,
            context.audit,
            body_timeout_s=context.server.http_body_timeout_s,
            known=self.gateway.knows,
            rekeyed=self.gateway.rekeyed,
            release_keys=self.config.release_keys,
            operator_keys=self.config.operator_keys,
            require_operator_signature=self.config.require_operator_signature,
        )
        server = context.server
        self._releases = ReleasesEndpoint(
            ReleaseShelf(self.config.releases_path, self.config.release_keys),
            agent_port=None
            if server.agent_listen is None
            else parse_hostport(server.agent_listen, "agent_listen")[1],
            pin=lambda: curl_pin(server),
        )
        self._host: HostContext | None = None
        self._blueprint = websocket_blueprint(
            self.transport,
            self.gateway.view,
            context.telemetry,
            self._settings,
            self._commands,
            master_secret=lambda: self.gateway.keyring.master_secrets[0],
        )

    @staticmethod
    def validate(settings: Mapping[str, Any], context: PluginContext) -> None:
        """Check the table without building anything (``monitoring-ws config check``)."""
        gateway_config(settings, context.server, context.cluster)

    def _settings(self) -> GatewayConfig:
        return self.config

    def _commands(self) -> CommandService | None:
        return None if self._host is None else self._host.commands

    def transports(self) -> Sequence[Transport]:
        return (self.transport,)

    def blueprints(self) -> Sequence[Blueprint]:
        return (self._blueprint,)

    def sinks(self) -> Sequence[TelemetrySink]:
        # In a cluster each agent's latest sample goes to Redis, for every node to read.
        return () if self.cluster is None else (self.cluster.latest_metrics,)

    def readers(self) -> Sequence[TelemetryReader]:
        return () if self.cluster is None else (self.cluster.latest_metrics,)

    def history(self) -> TelemetryHistory:
        return self.gateway.store  # the spool: this node's agents' metrics and logs

    def job_store(self) -> JobStorage | None:
        # In a cluster jobs live in Redis: another node carries on those of a node that died.
        return None if self.cluster is None else self.cluster.jobs

    def collectors(self) -> Sequence[MetricsCollector]:
        if self.cluster is None:
            return (GatewayCollector(self.gateway.view),)
        from ..cluster.metrics import ClusterCollector  # noqa: PLC0415 - coredis only for clusters

        return (GatewayCollector(self.gateway.view), ClusterCollector(self.cluster))

    def agent_http_routes(self) -> Mapping[str, AsgiHandler]:
        # A path ending in "/" takes what is under it.
        return {
            ENROLL_PATH: self._enroll,
            RELEASES_PREFIX: self._releases,
            INSTALL_PATH: self._releases,
        }

    def command_routes(self) -> Sequence[CommandRoute]:
        # The seed's POST /api/websocket/agents/:id/command (blueprint.py has it too).
        return (CommandRoute("/api/websocket/agents/", "/command", self.name, COMMANDS_PATH),)

    def openapi_paths(self) -> Mapping[str, Any]:
        return websocket_paths()

    def websocket_routes(self) -> Sequence[WebSocketRoute]:
        config = self.config
        return (
            WebSocketRoute(
                AGENT_PATH,
                self.gateway.endpoint,
                config.max_frame_bytes,
                max_first_message_bytes=config.max_auth_frame_bytes,
                max_unauthenticated=config.max_unauthenticated,
                max_unauthenticated_per_address=config.max_unauthenticated_per_address,
            ),
        )

    async def run(
        self, host: HostContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Commits, acks and deadlines (and the cluster's Redis work) until cancelled; the
        last commit happens on the way out."""
        async with contextlib.AsyncExitStack() as stack:
            if self.cluster is not None:
                await stack.enter_async_context(self.cluster.running(self.transport))
            self._host = host
            task_status.started()
            await self.gateway.run()

    def checks(self) -> Mapping[str, bool]:
        checks = {"state_database": self.gateway.spool.committing}
        if self.cluster is not None:
            checks["redis"] = self.cluster.registry.reachable
        return checks

    async def drain(self) -> None:
        """Refuse new agents; close open ones with 1001 and a retry hint (bounded)."""
        live = self.gateway.live
        log.info("closing %d agent connection(s) with 1001", len(live))
        live.shutdown(self.config.shutdown_retry_after_s)
        await live.wait_closed(AGENT_CLOSE_TIMEOUT_S)

    def reload(self, settings: Mapping[str, Any]) -> None:
        """What may change without a restart takes effect: the master secrets (new
        sessions verify with them; open ones keep theirs until they reconnect, at the
        latest after ``max_session_s``) and ``revoked_agents``."""
        config = gateway_config(settings, self._context.server, self._context.cluster)
        secrets = resolve_master_secrets(config)
        self.gateway.keyring = Keyring(secrets, seed_compatible=config.seed_compatible)
        if self.cluster is not None:
            self.cluster.registry.seal.rekey(secrets)
        self.config = config
        closed = self.gateway.endpoint.revoke(config.revoked_agents)
        log.info(
            "reloaded: %d agent(s) revoked, %d open session(s) closed",
            len(config.revoked_agents),
            closed,
        )
