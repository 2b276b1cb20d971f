"""Running the monitoring module: its enabled plugins, one nursery, one shutdown."""

from __future__ import annotations

import logging
import signal
from collections.abc import Mapping
from typing import Any

import trio

from ..transports import Transport
from ..transports.ssm import SSMPolicy, SSMTransport
from .plugins import HostContext, Plugin, PluginError, load_enabled

__all__ = ["run_host", "transports_in_order"]

log = logging.getLogger("monitoring_ws.host")


def transports_in_order(plugins: list[Plugin], options: Mapping[str, Any]) -> tuple[Transport, ...]:
    """The plugins' transports and (``ssm = true``) SSM, in ``order`` (default websocket, ssm)."""
    available: dict[str, Transport] = {}
    for plugin in plugins:
        for transport in plugin.transports():
            available[transport.name] = transport
    if options.get("ssm", False):
        policy = SSMPolicy.from_settings(
            options.get("ssm_safe_commands", ["ping"]), options.get("ssm_shell_allowed", [])
        )
        available["ssm"] = SSMTransport(policy=policy)
    order = list(options.get("order", ["websocket", "ssm"]))
    order += [name for name in available if name not in order]
    return tuple(available[name] for name in order if name in available)


async def run_host(
    plugin_settings: Mapping[str, Mapping[str, Any]],
    transport_options: Mapping[str, Any],
    *,
    stop: trio.Event | None = None,
    task_status: trio.TaskStatus[list[Plugin]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Load the enabled plugins, run them until SIGINT/SIGTERM (or ``stop``), then stop them."""
    plugins = load_enabled(plugin_settings)
    if not plugins:
        raise PluginError("no plugin is enabled: set enabled = true under [plugins.websocket]")
    try:
        transports = transports_in_order(plugins, transport_options)
    except ValueError as exc:
        raise PluginError(f"[transports]: {exc}") from None
    stop = trio.Event() if stop is None else stop
    async with trio.open_nursery() as nursery:
        blueprints = tuple(bp for plugin in plugins for bp in plugin.blueprints())
        context = HostContext(transports, nursery, blueprints)
        for plugin in plugins:
            await nursery.start(plugin.run, context)
            log.info("plugin %s started", plugin.name)
        task_status.started(plugins)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async with trio.open_nursery() as waiter:

                async def on_signal() -> None:
                    async for _ in signals:
                        stop.set()
                        return

                waiter.start_soon(on_signal)
                await stop.wait()
                waiter.cancel_scope.cancel()
        for plugin in reversed(plugins):
            await plugin.shutdown()
            log.info("plugin %s stopped", plugin.name)
