"""``demo``: a server, local agents and command round trips, on loopback."""

from __future__ import annotations

import argparse
from typing import Any

__all__ = ["add"]


def add(commands: Any) -> None:
    demo = commands.add_parser(
        "demo", help="a server, local agents and command round trips, on loopback"
    )
    demo.add_argument("--agents", type=int, default=3, help="how many local agents (default 3)")
    demo.add_argument("--keep", action="store_true", help="stay up until Ctrl-C")
    demo.add_argument(
        "--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="default: a free port"
    )
    demo.set_defaults(run=_demo)


def _demo(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from .demo_run import run_demo  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(args.agents, keep=args.keep, listen=args.listen)
    return 0
