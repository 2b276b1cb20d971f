"""Plugins of the monitoring module, found at start-up through entry points.

A plugin is an entry point in the ``monitoring_ws.plugins`` group naming a factory that
takes the plugin's settings table and returns an object with the ``Plugin`` interface.
Only enabled plugins are imported; an enabled plugin that fails to load stops start-up
with ``PluginError`` naming it and the cause.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any, Protocol

import attrs
import trio
from quart import Blueprint

from ..transports import Transport

__all__ = [
    "PLUGIN_GROUP",
    "Discovered",
    "HostContext",
    "Plugin",
    "PluginError",
    "discover",
    "load_enabled",
]

PLUGIN_GROUP = "monitoring_ws.plugins"


class PluginError(Exception):
    """An enabled plugin could not be loaded; the message names it and says why."""


@attrs.frozen
class HostContext:
    """What the host gives each plugin's ``run``."""

    #: Every enabled transport, in preference order (the router's list).
    transports: tuple[Transport, ...]
    #: Where a plugin starts its long-running tasks.
    nursery: trio.Nursery
    #: Every plugin's HTTP routes, for the plugin that serves HTTP to mount.
    blueprints: tuple[Blueprint, ...] = ()


class Plugin(Protocol):
    """What the host asks of a plugin."""

    name: str

    def transports(self) -> Sequence[Transport]:
        """The transports it provides (may be empty)."""
        ...

    def blueprints(self) -> Sequence[Blueprint]:
        """The HTTP routes it adds under the server's API (may be empty)."""
        ...

    async def run(
        self, host: HostContext, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Start serving (report ``started``), then run until ``shutdown``."""
        ...

    async def shutdown(self) -> None:
        """Stop what it runs and release what it holds; called once, at stop."""
        ...


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


def discover(settings: Mapping[str, Mapping[str, Any]]) -> list[Discovered]:
    """Every installed plugin and whether ``settings`` (``[plugins.NAME]``) enables it."""
    return [
        Discovered.of(entry, _enabled(settings.get(name, {}), name))
        for name, entry in sorted(_entries().items())
    ]


def _enabled(table: Mapping[str, Any], name: str) -> bool:
    value = table.get("enabled", False)
    if not isinstance(value, bool):
        raise PluginError(f"[plugins.{name}] enabled must be true or false, got {value!r}")
    return value


def load_enabled(settings: Mapping[str, Mapping[str, Any]]) -> list[Plugin]:
    """Import and create every enabled plugin; a disabled one is never imported."""
    entries = _entries()
    unknown = sorted(name for name in settings if name not in entries)
    enabled_unknown = [n for n in unknown if settings[n].get("enabled") is True]
    if enabled_unknown:
        raise PluginError(
            f"enabled but not installed: {', '.join(enabled_unknown)} "
            f"(installed: {', '.join(sorted(entries)) or 'none'})"
        )
    plugins: list[Plugin] = []
    for name, entry in sorted(entries.items()):
        table = dict(settings.get(name, {}))
        if not _enabled(table, name):
            continue
        table.pop("enabled")
        try:
            factory = entry.load()
            plugin: Plugin = factory(table)
        except Exception as exc:
            raise PluginError(
                f"plugin {name!r} ({entry.value}) failed to load: {type(exc).__name__}: {exc}"
            ) from exc
        plugins.append(plugin)
    return plugins
