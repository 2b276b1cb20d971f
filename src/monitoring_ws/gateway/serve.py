"""``monitoring-ws serve``: Hypercorn's trio worker running the gateway, and its shutdown."""

from __future__ import annotations

import gc
import logging
import resource
import signal
from collections.abc import Awaitable, Callable, Sequence
from functools import partial
from pathlib import Path

import attrs
import trio
from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve
from quart import Blueprint

from ..protocol import Keyring
from ..transports import Transport
from .api import create_api
from .asgi import AgentOnlyApp, GatewayApp, adapt_hypercorn_websockets
from .config import ConfigError, GatewayConfig
from .gateway import AGENT_PATH, Gateway
from .secrets import resolve_master_secrets
from .tls import certificate_fingerprint, ensure_self_signed

__all__ = ["Running", "apply_reload", "raise_open_file_limit", "serve", "tune_gc"]

log = logging.getLogger("monitoring_ws.serve")

#: How long agents get to take their 1001 before Hypercorn stops.
AGENT_CLOSE_TIMEOUT_S = 5.0


@attrs.frozen
class Running:
    """What a started server reports."""

    gateway: Gateway
    api_url: str
    agent_urls: tuple[str, ...]
    fingerprint: str | None
    stop: Callable[[], None]


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each agent holds a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft, hard


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server process.

    Full collections scan every tracked object, tens of ms with a thousand agents
    connected: they set the tail latency of commands. What is loaded at start-up is
    frozen out of them, and young collections run less often (docs/performance.md).
    """
    gc.freeze()
    gc.set_threshold(5000, 20, 100)


def _hypercorn_config(
    bind: str, config: GatewayConfig, tls: tuple[Path, Path] | None
) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [bind]
    hc.websocket_max_message_size = config.max_frame_bytes
    hc.graceful_timeout = AGENT_CLOSE_TIMEOUT_S
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our handlers, once
    hc.backlog = 4096  # reconnect storms arrive all at once
    hc.ssl_handshake_timeout = config.tls_handshake_timeout_s
    if config.worker_index is not None:
        hc.workers = 2  # only so that Hypercorn sets SO_REUSEPORT: each worker is a process
    if tls is not None:
        hc.certfile, hc.keyfile = str(tls[0]), str(tls[1])
    return hc


def _ws_urls(urls: list[str]) -> tuple[str, ...]:
    return tuple(url.replace("http", "ws", 1) + AGENT_PATH for url in urls)


async def serve(
    config: GatewayConfig,
    *,
    task_status: trio.TaskStatus[Running] = trio.TASK_STATUS_IGNORED,
    handle_signals: bool = True,
    gateway: Gateway | None = None,
    transports: Sequence[Transport] | None = None,
    blueprints: Sequence[Blueprint] = (),
    reload: Callable[[], GatewayConfig] | None = None,
) -> None:
    """Run until SIGINT/SIGTERM (or ``Running.stop``), then close agents with 1001.

    ``gateway``, ``transports`` and other plugins' ``blueprints`` come from the
    monitoring-module host when it runs the gateway as its ``websocket`` plugin. On
    SIGHUP, ``reload`` reads the settings again and ``revoked_agents`` takes effect.
    """
    if gateway is None and config.redis_url is not None:
        from ..cluster.node import serve_node  # noqa: PLC0415 - coredis only for clusters

        await serve_node(
            config,
            task_status=task_status,
            handle_signals=handle_signals,
            transports=transports,
            blueprints=blueprints,
            reload=reload,
        )
        return
    adapt_hypercorn_websockets()
    if gateway is None:
        keyring = Keyring(resolve_master_secrets(config), seed_compatible=config.seed_compatible)
        gateway = Gateway(config, keyring)
    tls: tuple[Path, Path] | None = None
    fingerprint = None
    if config.tls_self_signed:
        tls = ensure_self_signed(config.state_dir, config.tls_hostnames)
    elif config.tls_cert is not None and config.tls_key is not None:
        tls = (config.tls_cert, config.tls_key)
    if tls is not None:
        fingerprint = certificate_fingerprint(tls[0])

    stop = trio.Event()
    stopped = trio.Event()

    async def shutdown_trigger() -> None:
        await stopped.wait()

    serving: list[Callable[[], Awaitable[None]]] = []
    main_tls = tls if config.agent_listen is None else None
    main = partial(
        hypercorn_serve,
        GatewayApp(gateway, create_api(gateway, transports, blueprints)),
        _hypercorn_config(config.listen, config, main_tls),
        shutdown_trigger=shutdown_trigger,
    )
    serving.append(main)
    if config.agent_listen is not None:
        agents_only = partial(
            hypercorn_serve,
            AgentOnlyApp(gateway),
            _hypercorn_config(config.agent_listen, config, tls),
            shutdown_trigger=shutdown_trigger,
        )
        serving.append(agents_only)

    async with trio.open_nursery() as background:
        # Commits, acks and deadlines run until the agents are closed, then commit last.
        background.start_soon(gateway.run)
        async with trio.open_nursery() as nursery:
            urls = [await nursery.start(run) for run in serving]
            api_url = urls[0][0]
            agent_urls = _ws_urls(urls[-1])
            log.info("API on %s; agents connect to %s", api_url, ", ".join(agent_urls))
            if fingerprint is not None:
                log.info("TLS certificate SHA-256 fingerprint (wsCertSha256): %s", fingerprint)
            task_status.started(Running(gateway, api_url, agent_urls, fingerprint, stop.set))
            if handle_signals:
                nursery.start_soon(_stop_on_signal, stop)
                if reload is not None:  # lives until the background work is cancelled
                    background.start_soon(_reload_on_sighup, gateway, reload)
            await stop.wait()
            log.info(
                "shutting down: closing %d agent connection(s) with 1001", gateway.open_connections
            )
            gateway.shutdown()
            await gateway.wait_closed(AGENT_CLOSE_TIMEOUT_S)
            stopped.set()
        background.cancel_scope.cancel()
    log.info("stopped")


async def _stop_on_signal(stop: trio.Event) -> None:
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            stop.set()
            return


async def _reload_on_sighup(gateway: Gateway, reload: Callable[[], GatewayConfig]) -> None:
    with trio.open_signal_receiver(signal.SIGHUP) as signals:
        async for _ in signals:
            apply_reload(gateway, reload)


def apply_reload(gateway: Gateway, reload: Callable[[], GatewayConfig]) -> None:
    """Read the settings again; what can change without a restart takes effect
    (``revoked_agents``). A file that no longer reads is logged and changes nothing."""
    try:
        config = reload()
    except ConfigError as exc:
        log.error("reload refused, the running settings stay: %s", exc)  # noqa: TRY400 - no traceback: the message says it
        return
    closed = gateway.revoke(config.revoked_agents)
    log.info(
        "reloaded: %d agent(s) revoked, %d open session(s) closed",
        len(config.revoked_agents),
        closed,
    )
