"""The ``monitoring-ws`` command: one module per subcommand, each adding its parser, and
the subcommands plugins add through the ``monitoring_ws.cli`` entry points (the
websocket plugin's ``token`` and ``agent-config``)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence
from importlib.metadata import entry_points

from .. import __version__
from . import agent, config, ctl, demo, keys, plugins, serve

__all__ = ["CLI_GROUP", "build_parser", "main"]

#: Entry points naming ``add(subparsers)``: a plugin's own subcommands.
CLI_GROUP = "monitoring_ws.cli"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitoring-ws",
        description="Signed WebSocket transport between a monitoring server and its agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (keys, serve, config, agent, plugins, demo, ctl):
        command.add(commands)
    for entry in sorted(entry_points(group=CLI_GROUP), key=lambda e: e.name):
        try:
            entry.load()(commands)
        except Exception as exc:  # a broken plugin costs its subcommand, not the CLI
            print(
                f"monitoring-ws: the subcommand {entry.name!r} ({entry.value}) could not be "
                f"loaded: {type(exc).__name__}: {exc}",
                file=sys.stderr,
            )
    return parser


#: What ``monitoring-ws[server]`` brings (pyproject.toml): a command that needs one of these
#: says so instead of a traceback when only the agent is installed.
SERVER_MODULES = frozenset(
    {
        "hypercorn",
        "quart",
        "quart_trio",
        "boto3",
        "botocore",
        "cryptography",
        "coredis",
        "prometheus_client",
        "jsonschema",
        "werkzeug",
    }
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        result: int = args.run(args)
    except ModuleNotFoundError as missing:
        if missing.name is None or missing.name.split(".")[0] not in SERVER_MODULES:
            raise
        # `pip install monitoring-ws` is the agent; the server is an extra.
        print(
            f"monitoring-ws {args.command}: this needs the server's dependencies "
            f"({missing.name} is not installed): pip install 'monitoring-ws[server]'",
            file=sys.stderr,
        )
        return 69
    return result
