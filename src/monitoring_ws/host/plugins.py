"""Plugins of the monitoring module, found at start-up through entry points.

A plugin is an entry point in the ``monitoring_ws.plugins`` group naming a factory
``factory(settings, context) -> Plugin``: ``settings`` is its ``[plugins.NAME]`` table
without ``enabled``, ``context`` what the host shares (``PluginContext``). What a plugin
contributes (transports, HTTP routes, agent WebSocket endpoints, telemetry sinks and
readers, background work) the host asks through the ``Plugin`` interface;
``PluginBase`` gives every method a do-nothing default. Only enabled plugins are
imported; one that fails to load stops start-up with ``PluginError`` naming it.
A factory may offer ``validate(settings, context)`` for ``monitoring-ws config check``.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import TYPE_CHECKING, Any, Protocol

import attrs
import trio
from quart import Blueprint

from ..clock import wall_ms
from ..configbase import ConfigError
from ..transports import Transport
from .audit import AuditLog
from .config import TransportSettings
from .events import EventHub
from .metrics import MetricsCollector, ServerMetrics

if TYPE_CHECKING:
    from .command_service import CommandService
    from .config import ClusterSettings, MonitoringConfig, ServerSettings
    from .jobs.store import JobStorage
    from .router import TransportRouter
    from .telemetry import TelemetryBus, TelemetryHistory, TelemetryReader, TelemetrySink

__all__ = [
    "PLUGIN_GROUP",
    "TOO_BIG",
    "CommandRoute",
    "Discovered",
    "HostContext",
    "Plugin",
    "PluginBase",
    "PluginContext",
    "PluginError",
    "StartupError",
    "WebSocketRoute",
    "discover",
    "load_enabled",
    "validate_enabled",
]

PLUGIN_GROUP = "monitoring_ws.plugins"
#: A key the host adds to a ``websocket.receive`` message for a ``WebSocketRoute``: a
#: frame over the limit was dropped (not buffered); the value is its length. The endpoint
#: closes with 1009 and says why.
TOO_BIG = "monitoring_ws.too_big"

#: A raw ASGI handler: ``(scope, receive, send)``.
AsgiHandler = Callable[[Any, Any, Any], Awaitable[None]]
WebSocketHandler = AsgiHandler


class PluginError(Exception):
    """An enabled plugin could not be loaded; the message names it and says why."""


class StartupError(Exception):
    """A plugin's part cannot work (Redis unreachable at start, the state database); the
    message says what to do, and ``monitoring-ws serve`` adds ``hint`` to it."""

    hint = ""


@attrs.frozen
class WebSocketRoute:
    """A WebSocket endpoint a plugin serves (``/agent``), raw ASGI for its memory cost."""

    path: str
    handler: WebSocketHandler
    #: Frames larger than this are refused with 1009.
    max_message_bytes: int = 1 << 20
    #: A connection's first message is read only up to this (an agent's ``auth``; None:
    #: ``max_message_bytes``).
    max_first_message_bytes: int | None = None
    #: Sockets the lean listener holds from accept until this route takes them, in all
    #: and from one address (None: its defaults, 2,048 and 256).
    max_unauthenticated: int | None = None
    max_unauthenticated_per_address: int | None = None


@attrs.frozen
class CommandRoute:
    """A plugin's command POST route (``prefix`` + agent id + ``suffix``), answered by the
    host's command service through transport ``via`` only; the host serves it without
    the web framework (the plugin's blueprint keeps the same route for its docs)."""

    prefix: str
    suffix: str
    #: The transport it is limited to (None: the router picks, as for the neutral route).
    via: str | None
    #: Where its records are read (a 202's ``Location``).
    records_path: str

    @property
    def rule(self) -> str:
        """As a Quart URL rule (what token scopes are decided by)."""
        return f"{self.prefix}<agent_id>{self.suffix}"


@attrs.frozen
class PluginContext:
    """What the host shares with a plugin when it builds it."""

    server: ServerSettings
    cluster: ClusterSettings
    #: Where the plugin publishes agents' metrics and logs, and reads them back.
    telemetry: TelemetryBus
    #: Wall-clock milliseconds (tests inject one that follows trio's MockClock).
    clock: Callable[[], int] = wall_ms
    #: The server's Prometheus instruments (commands, commits).
    metrics: ServerMetrics = attrs.field(factory=ServerMetrics)
    #: The audit log (``noisy`` for refusals anyone can cause).
    audit: AuditLog = attrs.field(factory=lambda: AuditLog(None))
    #: Live events (``GET /api/events``): agents connecting and leaving, commands.
    events: EventHub = attrs.field(factory=EventHub)
    #: ``[transports]``: the router's order and SSM's settings.
    transports: TransportSettings = attrs.field(factory=TransportSettings)


@attrs.frozen
class HostContext:
    """What a running plugin may use: the router over every transport, the telemetry
    read side, and the one way to send commands (records, audit, events, metrics)."""

    router: TransportRouter
    telemetry: TelemetryReader
    commands: CommandService


class Plugin(Protocol):
    """What the host asks of a plugin (``PluginBase`` has the defaults)."""

    name: str

    def transports(self) -> Sequence[Transport]:
        """The transports it provides."""
        ...

    def blueprints(self) -> Sequence[Blueprint]:
        """HTTP routes it adds; the host's guard (tokens, browser rules) covers them."""
        ...

    def websocket_routes(self) -> Sequence[WebSocketRoute]:
        """WebSocket endpoints, served on ``listen`` and on ``agent_listen``."""
        ...

    def agent_http_routes(self) -> Mapping[str, AsgiHandler]:
        """Raw ASGI HTTP endpoints for agents, by path (one ending in "/" takes what is
        under it), served on both listeners outside the API's guard (they authenticate
        the caller themselves, e.g. ``/enroll``, or serve what is public, releases)."""
        ...

    def command_routes(self) -> Sequence[CommandRoute]:
        """Command POST routes of its blueprints that the host may serve lean."""
        ...

    def sinks(self) -> Sequence[TelemetrySink]:
        """Telemetry consumers: each gets every sample and log batch, through its own queue."""
        ...

    def readers(self) -> Sequence[TelemetryReader]:
        """Where else the API may read telemetry from (e.g. other nodes' agents)."""
        ...

    def history(self) -> TelemetryHistory | None:
        """The telemetry it keeps, for ``GET /api/telemetry`` (None: it keeps none)."""
        ...

    def job_store(self) -> JobStorage | None:
        """Where jobs are kept instead of this server's file (a cluster's shared store, so
        that another node carries on a job whose node died); None: the host's own."""
        ...

    def collectors(self) -> Sequence[MetricsCollector]:
        """Prometheus families it alone produces, read at scrape time (``GET /metrics``)."""
        ...

    def openapi_paths(self) -> Mapping[str, Any]:
        """Its blueprints' routes in OpenAPI 3.1 (``/openapi.json``)."""
        ...

    async def run(
        self, host: HostContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Its background work: report ``started`` when ready, then run until cancelled
        (cleanup in ``finally``). The listeners start after every plugin started."""
        ...

    async def drain(self) -> None:
        """At shutdown, before the listeners stop: refuse new work and close what it
        serves (bounded; e.g. agents get 1001 and a retry hint)."""
        ...

    def checks(self) -> Mapping[str, bool]:
        """Readiness checks by name (``GET /readyz``): cheap, no I/O, True when fine."""
        ...

    def reload(self, settings: Mapping[str, Any]) -> None:
        """SIGHUP: its table read again; apply what may change without a restart."""
        ...


class PluginBase:
    """Defaults for every ``Plugin`` method: contributes nothing, runs nothing."""

    name = "plugin"

    def transports(self) -> Sequence[Transport]:
        return ()

    def blueprints(self) -> Sequence[Blueprint]:
        return ()

    def websocket_routes(self) -> Sequence[WebSocketRoute]:
        return ()

    def agent_http_routes(self) -> Mapping[str, AsgiHandler]:
        return {}

    def command_routes(self) -> Sequence[CommandRoute]:
        return ()

    def sinks(self) -> Sequence[TelemetrySink]:
        return ()

    def readers(self) -> Sequence[TelemetryReader]:
        return ()

    def history(self) -> TelemetryHistory | None:
        return None

    def job_store(self) -> JobStorage | None:
        return None

    def collectors(self) -> Sequence[MetricsCollector]:
        return ()

    def openapi_paths(self) -> Mapping[str, Any]:
        return {}

    async def run(
        self, host: HostContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        task_status.started()

    async def drain(self) -> None:
        return None

    def checks(self) -> Mapping[str, bool]:
        return {}

    def reload(self, settings: Mapping[str, Any]) -> None:
        return None


@attrs.frozen
class Discovered:
    """An installed plugin, enabled or not (nothing of it imported yet)."""

    name: str
    distribution: str
    target: str
    enabled: bool

    @classmethod
    def of(cls, entry: EntryPoint, enabled: bool) -> Discovered:
        dist = entry.dist.name if entry.dist is not None else "?"
        return cls(entry.name, dist, entry.value, enabled)


def _entries() -> dict[str, EntryPoint]:
    return {entry.name: entry for entry in entry_points(group=PLUGIN_GROUP)}


def discover(config: MonitoringConfig) -> list[Discovered]:
    """Every installed plugin and whether ``config`` enables it."""
    return [
        Discovered.of(entry, config.enabled(name)) for name, entry in sorted(_entries().items())
    ]


def _enabled_entries(config: MonitoringConfig) -> list[tuple[str, EntryPoint]]:
    entries = _entries()
    missing = sorted(n for n in config.plugins if n not in entries and config.enabled(n))
    if missing:
        raise PluginError(
            f"enabled but not installed: {', '.join(missing)} "
            f"(installed: {', '.join(sorted(entries)) or 'none'})"
        )
    return [(name, entry) for name, entry in sorted(entries.items()) if config.enabled(name)]


def _load(name: str, entry: EntryPoint) -> Any:
    try:
        return entry.load()
    except Exception as exc:
        raise PluginError(
            f"plugin {name!r} ({entry.value}) failed to load: {type(exc).__name__}: {exc}"
        ) from exc


def load_enabled(config: MonitoringConfig, context: PluginContext) -> list[Plugin]:
    """Import and build every enabled plugin; a disabled one is never imported."""
    plugins: list[Plugin] = []
    for name, entry in _enabled_entries(config):
        factory = _load(name, entry)
        try:
            plugin: Plugin = factory(config.plugin_settings(name), context)
        except ConfigError as exc:
            raise PluginError(f"{config.where}: [plugins.{name}] {exc}") from None
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} ({entry.value}) failed to start: {type(exc).__name__}: {exc}"
            ) from exc
        plugins.append(plugin)
    return plugins


def validate_enabled(config: MonitoringConfig, context: PluginContext) -> list[str]:
    """Check every enabled plugin's table without building it (``config check``); the
    names of the plugins checked. Raises ``PluginError`` naming the file and table."""
    checked = []
    for name, entry in _enabled_entries(config):
        validate = getattr(_load(name, entry), "validate", None)
        if validate is not None:
            try:
                validate(config.plugin_settings(name), context)
            except (ConfigError, ValueError) as exc:
                raise PluginError(f"{config.where}: [plugins.{name}] {exc}") from None
        checked.append(name)
    return checked
