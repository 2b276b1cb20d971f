"""The ``monitoring-ws`` command: one module per subcommand, each adding its parser."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from .. import __version__
from . import agent, agent_config, config, demo, keys, plugins, serve, token

__all__ = ["build_parser", "main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitoring-ws",
        description="Signed WebSocket transport between a monitoring server and its agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    for command in (keys, serve, config, token, agent, agent_config, plugins, demo):
        command.add(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result
