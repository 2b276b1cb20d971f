"""``config check FILE``: validate a monitoring.toml without starting anything."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..configbase import config_file_default

__all__ = ["add"]


def add(commands: Any) -> None:
    config = commands.add_parser("config", help="check a monitoring.toml")
    actions = config.add_subparsers(dest="action", metavar="ACTION", required=True)
    check = actions.add_parser(
        "check",
        help="validate the file and the enabled plugins' tables; start nothing",
        description=(
            "Read FILE as `serve --config FILE` would: every table and key, the enabled "
            "plugins' own settings, the SSM policy. Exit 0 when it would start, 1 with the "
            "reason otherwise. An old [gateway] file is translated, with a warning per move."
        ),
    )
    check.add_argument(
        "file",
        type=Path,
        metavar="FILE",
        nargs="?" if config_file_default() else None,
        default=config_file_default(),
        help="monitoring.toml (default: $MONITORING_WS_CONFIG)",
    )
    check.set_defaults(run=_check)


def _check(args: argparse.Namespace) -> int:
    from ..configbase import ConfigError  # noqa: PLC0415
    from ..host.config import load_monitoring_config  # noqa: PLC0415
    from ..host.plugins import PluginContext, PluginError, validate_enabled  # noqa: PLC0415
    from ..host.telemetry import TelemetryBus  # noqa: PLC0415

    try:
        config = load_monitoring_config(args.file)
        context = PluginContext(
            config.server, config.cluster, TelemetryBus(), transports=config.transports
        )
        plugins = validate_enabled(config, context)
    except (ConfigError, PluginError) as exc:
        raise SystemExit(f"monitoring-ws config check: {exc}") from None
    for warning in config.warnings:
        print(f"warning: {warning}", file=sys.stderr)
    print(
        f"{args.file}: ok (plugins: {', '.join(plugins) or 'none'}; listen {config.server.listen})"
    )
    return 0
