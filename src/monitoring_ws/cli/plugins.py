"""``plugins``: what is installed, and what monitoring.toml enables."""

from __future__ import annotations

import argparse
from typing import Any

from ..configbase import add_config_option

__all__ = ["add"]


def add(commands: Any) -> None:
    plugins = commands.add_parser(
        "plugins", help="list installed plugins and whether monitoring.toml enables them"
    )
    add_config_option(plugins)
    plugins.set_defaults(run=_plugins)


def _plugins(args: argparse.Namespace) -> int:
    from ..agent.handlers import ENTRY_POINT_GROUP  # noqa: PLC0415
    from ..host.config import load_monitoring_config  # noqa: PLC0415
    from ..host.plugins import PLUGIN_GROUP, PluginError, discover  # noqa: PLC0415

    try:
        found = discover(load_monitoring_config(args.config))
    except (PluginError, ValueError) as exc:
        raise SystemExit(f"monitoring-ws plugins: {exc}") from None
    print(f"monitoring-module plugins ({PLUGIN_GROUP}):")
    for plugin in found:
        state = "enabled" if plugin.enabled else "disabled"
        print(f"  {plugin.name:16} {state:9} {plugin.distribution}  {plugin.target}")
    if not found:
        print("  none installed")
    from importlib.metadata import entry_points  # noqa: PLC0415

    print(f"agent commands ({ENTRY_POINT_GROUP}):")
    for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        dist = entry.dist.name if entry.dist is not None else "?"
        print(f"  {entry.name:16} {dist}  {entry.value}")
    return 0
