"""``monitoring-ws agent-config``: an agent's settings file, made on the server (a
subcommand the websocket plugin adds through the ``monitoring_ws.cli`` entry points)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from ..configbase import add_config_option
from ..logformat import setup_logging

__all__ = ["add"]


def add(commands: Any) -> None:
    config_cmd = commands.add_parser(
        "agent-config",
        help="print an agent's settings file: URL, its key, the certificate pin",
        description="Hardened by default: the agent gets its own derived key, never the "
        "master secret. The public address comes from --public-host, else IMDSv2.",
    )
    config_cmd.add_argument("agent_id", metavar="AGENT_ID")
    config_cmd.add_argument("--public-host", metavar="HOST", help="the address agents dial")
    config_cmd.add_argument(
        "--seed-compatible",
        action="store_true",
        help="put the master secret in wsSecret, as the seed did (any such agent can sign "
        "as every agent)",
    )
    add_config_option(config_cmd, "the server's config")
    config_cmd.add_argument("--state-dir", type=Path, metavar="DIR", help="the server's state")
    config_cmd.add_argument("--output", type=Path, metavar="FILE", help="write it (mode 0600)")
    config_cmd.add_argument("--imds-endpoint", help=argparse.SUPPRESS)
    config_cmd.set_defaults(run=_agent_config)


def _agent_config(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from ..configbase import ConfigError  # noqa: PLC0415
    from ..host.config import load_monitoring_config  # noqa: PLC0415
    from ..private import write_private  # noqa: PLC0415
    from .agent_config import agent_config  # noqa: PLC0415
    from .config import gateway_config_of  # noqa: PLC0415
    from .secrets import resolve_master_secrets  # noqa: PLC0415

    setup_logging(verbose=False)
    try:
        whole = load_monitoring_config(args.config, {"server": {"state_dir": args.state_dir}})
        config = gateway_config_of(whole)
        secret = resolve_master_secrets(config)[0]
        settings = agent_config(
            config.server,
            secret,
            args.agent_id,
            public_host=args.public_host,
            seed_compatible=args.seed_compatible,
            imds_endpoint=args.imds_endpoint,
        )
    except (ConfigError, ValueError) as exc:
        raise SystemExit(f"monitoring-ws agent-config: {exc}") from None
    if "{public_ip}" in settings["wsApiUrl"]:
        print(
            "monitoring-ws agent-config: no public address (not on EC2?): replace {public_ip} "
            "in wsApiUrl, or pass --public-host",
            file=sys.stderr,
        )
    text = json.dumps(settings, indent=2) + "\n"
    if args.output is None:
        sys.stdout.write(text)
    else:
        write_private(args.output, text)
        print(f"wrote {args.output} (mode 0600: it holds a key)", file=sys.stderr)
    return 0
