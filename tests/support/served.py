"""A real server in the test's nursery: the monitoring module's host, settings as a test
writes them (the flat keys of docs/gateway.md, translated like an old [gateway] file)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import trio

from monitoring_ws.clock import wall_ms
from monitoring_ws.gateway.gateway import Gateway
from monitoring_ws.host.config import MonitoringConfig, config_from_document, translate_legacy
from monitoring_ws.host.server import Running, serve_host
from monitoring_ws.websocket.plugin import WebSocketPlugin

__all__ = ["Served", "config_from_flat", "serve_in"]


class Served:
    """A started server, and (when it runs) the websocket plugin's gateway."""

    def __init__(self, running: Running) -> None:
        self.running = running
        self.api_url = running.api_url
        self.agent_urls = running.agent_urls
        self.fingerprint = running.fingerprint
        self.stop = running.stop

    @property
    def plugin(self) -> WebSocketPlugin:
        plugin = self.running.plugins["websocket"]
        assert isinstance(plugin, WebSocketPlugin)
        return plugin

    @property
    def gateway(self) -> Gateway:
        return self.plugin.gateway


def config_from_flat(flat: Mapping[str, Any], **tables: Any) -> MonitoringConfig:
    """Flat gateway keys (``listen``, ``heartbeat_interval_ms``...) as a monitoring.toml."""
    document, _ = translate_legacy({"gateway": dict(flat), **tables}, "test settings")
    return config_from_document(document, "test settings")


async def serve_in(
    nursery: trio.Nursery, config: MonitoringConfig, clock: Callable[[], int] = wall_ms
) -> Served:
    serve = partial(serve_host, config, handle_signals=False, clock=clock)
    running: Running = await nursery.start(serve)
    return Served(running)


def ssm_only_app(**create: Any) -> Any:
    """The host's Quart app over SSM alone (no plugin, nothing served): for what the app
    answers by itself. ``create`` goes to ``create_app`` (e.g. ``readiness``)."""
    from monitoring_ws.host.api import create_app  # noqa: PLC0415
    from monitoring_ws.host.command_service import CommandService  # noqa: PLC0415
    from monitoring_ws.host.commandlog import CommandLog  # noqa: PLC0415
    from monitoring_ws.host.config import ServerSettings  # noqa: PLC0415
    from monitoring_ws.host.router import TransportRouter  # noqa: PLC0415
    from monitoring_ws.host.telemetry import TelemetryBus  # noqa: PLC0415
    from monitoring_ws.ssm import SSMTransport  # noqa: PLC0415

    settings = ServerSettings()
    commands = CommandService(
        TransportRouter([SSMTransport()]),
        CommandLog(None),
        default_timeout_ms=settings.default_command_timeout_ms,
        max_timeout_ms=settings.max_command_timeout_ms,
    )
    return create_app(settings, commands, TelemetryBus(), **create)
