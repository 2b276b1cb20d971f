"""``serve``: the monitoring module's server. Hypercorn (trio worker) on ``listen`` and
``agent_listen``, the plugins, and one shutdown order.

Lifetimes nest: telemetry delivery and the plugins' background work run outside the
listeners, so when a stop comes the plugins drain first (agents get 1001 and a retry
hint), then the listeners stop, then sinks get a bounded moment to flush, and last the
background work is cancelled (the gateway makes its final commit in its ``finally``).
"""

from __future__ import annotations

import logging
import signal
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import trio

from ..clock import wall_ms
from ..configbase import ConfigError, parse_hostport
from ..sdnotify import notify
from .agent_gauges import AgentGauges
from .api import create_app
from .api.agents import COMMAND_ROUTE
from .api.commandroutes import LeanCommandRoutes
from .api.health import Readiness
from .audit import AuditLog
from .command_service import CommandService
from .commandlog import CommandLog
from .config import MonitoringConfig, ServerSettings
from .events import EventHub
from .fleet import Fleet
from .jobs import JobRunner, JobStore
from .labels import LabelStore
from .metrics import ServerMetrics
from .plugins import (
    AsgiHandler,
    HostContext,
    Plugin,
    PluginContext,
    PluginError,
    WebSocketRoute,
    load_enabled,
)
from .router import TransportRouter, transports_in_order
from .serving.asgi import HostApp, MetricsApp, adapt_hypercorn_websockets
from .serving.h11guard import guard_h11
from .serving.listeners import DRAIN_TIMEOUT_S, listener_server
from .serving.tls import certificate_fingerprint, ensure_self_signed
from .serving.wsmask import accelerate_masking
from .telemetry import TelemetryBus
from .tokens import TokenSet

__all__ = ["Running", "serve_host"]

log = logging.getLogger("monitoring_ws.serve")

#: How long plugins get to drain (agents to take their 1001) before the listeners stop.
#: How long sinks get to take what is queued for them at shutdown.
FLUSH_TIMEOUT_S = 2.0


@attrs.frozen
class Running:
    """What a started server reports."""

    api_url: str
    #: ``ws[s]://`` URLs of every plugin WebSocket route on the agent listener.
    agent_urls: tuple[str, ...]
    fingerprint: str | None
    stop: Callable[[], None]
    plugins: Mapping[str, Plugin]
    router: TransportRouter
    telemetry: TelemetryBus
    audit: AuditLog
    events: EventHub
    #: The Quart app (its routes: tests/test_openapi.py compares them with /openapi.json).
    app: Any
    #: The API tokens in force (a reload replaces them).
    tokens: TokenSet


def _tls(server: ServerSettings) -> tuple[Path, Path] | None:
    if server.tls_self_signed:
        return ensure_self_signed(server.state_dir, server.tls_hostnames)
    if server.tls_cert is not None and server.tls_key is not None:
        return server.tls_cert, server.tls_key
    return None


def _worker_port(bind: str, worker_index: int | None) -> str:
    """Worker i of ``serve --workers`` serves its metrics on the port plus i (each worker
    is scraped on its own; docs/operations.md)."""
    if worker_index is None:
        return bind
    host, port = parse_hostport(bind, "metrics_listen")
    if port == 0:
        return bind
    return f"[{host}]:{port + worker_index}" if ":" in host else f"{host}:{port + worker_index}"


def _state_file(config: MonitoringConfig, stem: str, suffix: str = ".sqlite3") -> Path:
    """A state file of this process: one per worker when several share the directory."""
    index = config.cluster.worker_index
    return config.server.state_dir / (
        f"{stem}{suffix}" if index is None else f"{stem}-w{index}{suffix}"
    )


@attrs.frozen
class _Assembly:
    """Everything built from the settings before anything runs."""

    plugins: tuple[Plugin, ...]
    router: TransportRouter
    telemetry: TelemetryBus
    commands: CommandService
    app: Any
    routes: Mapping[str, WebSocketRoute]
    readiness: Readiness
    metrics: ServerMetrics
    audit: AuditLog
    events: EventHub
    tokens: TokenSet
    http_routes: Mapping[str, AsgiHandler]
    lean_commands: LeanCommandRoutes
    jobs: JobRunner


def _assemble(config: MonitoringConfig, clock: Callable[[], int]) -> _Assembly:
    """Build the plugins (each given what it uses), the router over their transports and
    SSM, and the API over both. Raises ``PluginError`` or ``ConfigError``."""
    events = EventHub()
    telemetry = TelemetryBus(log_ring=config.server.log_ring, events=events)
    metrics = ServerMetrics()
    server = config.server
    audit = AuditLog(
        server.audit_log or _state_file(config, "audit", ".jsonl"),
        max_bytes=server.audit_max_bytes,
        backups=server.audit_backups,
    )
    context = PluginContext(
        server, config.cluster, telemetry, clock, metrics, audit, events, config.transports
    )
    plugins = tuple(load_enabled(config, context))
    metrics.add([collector for plugin in plugins for collector in plugin.collectors()])
    if config.server.agent_gauges:
        metrics.add([AgentGauges(telemetry.memory)])
    for plugin in plugins:
        for sink in plugin.sinks():
            telemetry.register(sink)
        for reader in plugin.readers():
            telemetry.add_reader(reader)
        history = plugin.history()
        if history is not None:
            telemetry.set_history(history)
    transports = transports_in_order(plugins, config.transports)
    if not transports:
        raise PluginError(
            "no transport is enabled: enable the websocket plugin, or set [transports] ssm = true"
        )
    router = TransportRouter(transports)
    routes = {route.path: route for plugin in plugins for route in plugin.websocket_routes()}
    http_routes = {
        path: handler for plugin in plugins for path, handler in plugin.agent_http_routes().items()
    }
    commands = CommandService(
        router,
        CommandLog(_state_file(config, "commands")),
        default_timeout_ms=server.default_command_timeout_ms,
        max_timeout_ms=server.max_command_timeout_ms,
        events=events,
        metrics=metrics,
        audit=audit,
        clock=clock,
    )
    readiness = Readiness()
    tokens = TokenSet(server.api_tokens)
    fleet = Fleet(router, LabelStore(_state_file(config, "labels")))
    shared_jobs = [store for plugin in plugins if (store := plugin.job_store()) is not None]
    jobs = JobRunner(
        commands,
        fleet,
        shared_jobs[0] if shared_jobs else JobStore(_state_file(config, "jobs")),
        events=events,
        max_targets=server.max_job_agents,
        max_running=server.max_running_jobs,
    )
    app = create_app(
        config.server,
        commands,
        telemetry,
        plugins=plugins,
        readiness=readiness,
        metrics=metrics,
        audit=audit,
        events=events,
        tokens=tokens,
        fleet=fleet,
        jobs=jobs,
    )
    return _Assembly(
        plugins,
        router,
        telemetry,
        commands,
        app,
        routes,
        readiness,
        metrics,
        audit,
        events,
        tokens,
        http_routes,
        LeanCommandRoutes(
            [COMMAND_ROUTE, *(r for plugin in plugins for r in plugin.command_routes())],
            commands,
            server,
            tokens,
            audit,
        ),
        jobs,
    )


async def serve_host(
    config: MonitoringConfig,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
    handle_signals: bool = True,
    reload: Callable[[], MonitoringConfig] | None = None,
    clock: Callable[[], int] = wall_ms,
) -> None:
    """Build the enabled plugins, serve until SIGINT/SIGTERM (or ``Running.stop``), stop
    in order. SIGHUP calls ``reload`` and hands each plugin its table again. ``clock``
    (wall-clock ms) is what plugins' sessions go by.

    Raises ``PluginError`` (a plugin failed to load or start) or ``ConfigError``.
    """
    for warning in config.warnings:
        log.warning("%s", warning)
    adapt_hypercorn_websockets()
    guard_h11()
    if not accelerate_masking():
        log.info("wsaccel is not installed: frames are unmasked in pure Python (slower)")
    built = _assemble(config, clock)
    try:
        async with trio.open_nursery() as background:
            await background.start(built.telemetry.run)
            await background.start(built.audit.run)
            host = HostContext(built.router, built.telemetry, built.commands)
            for plugin in built.plugins:
                await background.start(plugin.run, host)
                log.info("plugin %s started", plugin.name)
            await background.start(built.jobs.run)  # after the transports: jobs go on
            if handle_signals and reload is not None:  # until the background is cancelled
                background.start_soon(_reload_on_sighup, built, reload)
            await _listen(config, built, task_status, handle_signals=handle_signals)
            await built.telemetry.flush(FLUSH_TIMEOUT_S)
            await built.audit.flush(FLUSH_TIMEOUT_S)
            background.cancel_scope.cancel()
    finally:
        built.commands.log.close()
        built.jobs.store.close()
        built.jobs.fleet.labels.close()
    log.info("stopped")


async def _listen(
    config: MonitoringConfig,
    built: _Assembly,
    task_status: trio.TaskStatus[Running],
    *,
    handle_signals: bool,
) -> None:
    """Serve on the listeners until stopped; the plugins drain before the listeners close."""
    server = config.server
    tls = _tls(server)
    fingerprint = None if tls is None else certificate_fingerprint(tls[0])
    max_bytes = max((route.max_message_bytes for route in built.routes.values()), default=1 << 20)
    shared = config.cluster.worker_index is not None
    listeners: list[tuple[Any, str, tuple[Path, Path] | None, bool]] = [
        (
            HostApp(built.app, built.routes, built.http_routes, built.lean_commands),
            server.listen,
            tls if server.agent_listen is None else None,
            server.api_server == "lean",
        )
    ]
    if server.agent_listen is not None:
        agents_only = HostApp(None, built.routes, built.http_routes)
        listeners.append((agents_only, server.agent_listen, tls, server.agent_server == "lean"))
    if server.metrics_listen is not None:  # open, so kept to loopback (ServerSettings.check)
        bind = _worker_port(server.metrics_listen, config.cluster.worker_index)
        listeners.append((MetricsApp(built.metrics), bind, None, False))
    stop, stopped = trio.Event(), trio.Event()

    async def shutdown_trigger() -> None:
        await stopped.wait()

    async with trio.open_nursery() as serving:
        urls: list[list[str]] = []
        for index, (asgi, bind, listener_tls, lean) in enumerate(listeners):
            serve = listener_server(
                asgi,
                bind,
                server,
                tls=listener_tls,
                lean_routes=built.routes if lean else None,
                max_message_bytes=max_bytes,
                shared_port=shared,
                shutdown_trigger=shutdown_trigger,
                api=index == 0,  # the first is the API's
            )
            urls.append(await serving.start(serve))
        api_url = urls[0][0]
        agent_listener = urls[1] if server.agent_listen is not None else urls[0]
        agent_urls = tuple(
            url.replace("http", "ws", 1) + path for path in built.routes for url in agent_listener
        )
        log.info("API on %s; agents connect to %s", api_url, ", ".join(agent_urls) or "-")
        if fingerprint is not None:
            log.info("TLS certificate SHA-256 fingerprint (wsCertSha256): %s", fingerprint)
        by_name = {plugin.name: plugin for plugin in built.plugins}
        built.readiness.listening = True
        task_status.started(
            Running(
                api_url,
                agent_urls,
                fingerprint,
                stop.set,
                by_name,
                built.router,
                built.telemetry,
                built.audit,
                built.events,
                built.app,
                built.tokens,
            )
        )
        if handle_signals:
            await serving.start(_stop_on_signal, stop)
        if config.cluster.worker_index is None:  # a worker's supervisor speaks for it
            # Ready: every listener is up and SIGTERM stops it cleanly from now on.
            notify(f"READY=1\nSTATUS=API on {api_url}")
        await stop.wait()
        log.info("shutting down")
        if config.cluster.worker_index is None:
            notify("STOPPING=1")
        built.readiness.draining = True  # /readyz says 503 while the plugins drain
        built.events.close()  # live event streams end: they would hold the listener open
        with trio.move_on_after(DRAIN_TIMEOUT_S):
            async with trio.open_nursery() as draining:
                for plugin in built.plugins:
                    draining.start_soon(plugin.drain)
        stopped.set()


async def _stop_on_signal(
    stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        task_status.started()
        async for _ in signals:
            stop.set()
            return


async def _reload_on_sighup(built: _Assembly, reload: Callable[[], MonitoringConfig]) -> None:
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            apply_reload(built.plugins, reload, built.audit, built.tokens)


def apply_reload(
    plugins: Sequence[Plugin],
    reload: Callable[[], MonitoringConfig],
    audit: AuditLog | None = None,
    tokens: TokenSet | None = None,
) -> None:
    """Read the settings again: the API tokens and the log level take effect, and each
    plugin gets its table again (the websocket plugin: master secrets, revoked agents).
    A file that no longer reads is logged and changes nothing; nor does any other
    setting (listeners, TLS, state: those need a restart)."""
    audit = AuditLog(None) if audit is None else audit
    try:
        config = reload()
    except ConfigError as exc:
        log.error("reload refused, the running settings stay: %s", exc)  # noqa: TRY400 - the message says it
        audit.record("reload", ok=False, error=str(exc))
        return
    audit.record("reload", ok=True)
    if tokens is not None:
        tokens.replace(config.server.api_tokens)
    logging.getLogger().setLevel(config.server.log_level.upper())
    log.info(
        "reloaded: %d API token(s), log level %s",
        len(config.server.api_tokens),
        config.server.log_level,
    )
    for plugin in plugins:
        settings: dict[str, Any] = config.plugin_settings(plugin.name)
        try:
            plugin.reload(settings)
        except ConfigError as exc:
            log.error("reload of plugin %s refused: %s", plugin.name, exc)  # noqa: TRY400
