"""``agent``: run the agent."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from .common import EX_CONFIG, add_log_format, setup_logging, warn_secret_in_argv

#: The join token for ``agent enroll`` (kept out of argv).
JOIN_TOKEN_ENV = "MONITORING_WS_JOIN_TOKEN"  # noqa: S105 - a variable name

__all__ = ["add"]


def add(commands: Any) -> None:
    agent = commands.add_parser(
        "agent",
        help="run the agent: dial out to the server, stream metrics and logs, run commands",
        description="Settings: --config FILE (JSON, the seed's shape), MONITORING_WS_* "
        "variables, then these flags (docs/agent.md).",
    )
    agent.add_argument(
        "action",
        nargs="?",
        choices=("run", "enroll", "setup"),
        default="run",
        help="run (the default); enroll: trade a join token for this agent's settings; "
        "setup: write the launcher (and unit) of an installed layout (install.sh uses it)",
    )
    agent.add_argument("--config", type=Path, metavar="FILE", help="JSON settings file")
    agent.add_argument(
        "--token",
        help=f"enroll: the join token (visible in ps: prefer ${JOIN_TOKEN_ENV})",
    )
    agent.add_argument(
        "--output", type=Path, metavar="FILE", help="enroll: where to write the settings"
    )
    agent.add_argument("--url", help="server URL, e.g. wss://gateway.example.com/agent")
    agent.add_argument(
        "--secret", help="master secret (visible to other users in ps: prefer the file)"
    )
    agent.add_argument("--agent-key", metavar="HEX", help="this agent's derived key")
    agent.add_argument("--agent-id", metavar="ID", help="default: EC2 instance id, else hostname")
    agent.add_argument("--insecure", action="store_true", help="allow ws:// beyond loopback")
    agent.add_argument(
        "--state-dir",
        metavar="DIR",
        help="where the outbox is kept (default: $STATE_DIRECTORY or "
        "~/.local/state/monitoring-ws-agent)",
    )
    setup = agent.add_argument_group('setup (docs/install.md, "Layout")')
    setup.add_argument("--home", type=Path, metavar="DIR", help="releases, outbox, trial")
    setup.add_argument("--launcher", type=Path, metavar="FILE", help="the launcher to write")
    setup.add_argument("--python", metavar="FILE", help="the interpreter it runs")
    setup.add_argument("--unit", type=Path, metavar="FILE", help="also write the systemd unit")
    agent.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_log_format(agent)
    agent.set_defaults(run=_agent)


def _agent(args: argparse.Namespace) -> int:
    if args.action == "enroll":
        return _enroll(args)
    if args.action == "setup":
        return _setup(args)

    from ..agent.main import run_agent  # noqa: PLC0415
    from ..agent.outbox import OutboxError  # noqa: PLC0415
    from ..agent.settings import SettingsError, load_settings  # noqa: PLC0415

    setup_logging(verbose=args.verbose, log_format=args.log_format)
    if args.agent_key:
        warn_secret_in_argv("--agent-key", "MONITORING_WS_AGENT_KEY or wsAgentKey in the file")
    if args.secret:
        warn_secret_in_argv("--secret", "MONITORING_WS_SECRET or the config file")
    try:
        settings = load_settings(
            args.config,
            wsApiUrl=args.url,
            wsSecret=args.secret,
            wsAgentKey=args.agent_key,
            agentId=args.agent_id,
            insecure=args.insecure or None,
            stateDir=args.state_dir,
        )
    except SettingsError as exc:
        print(f"monitoring-ws agent: {exc}", file=sys.stderr)
        return EX_CONFIG  # systemd: RestartPreventExitStatus, a bad file is not retried
    try:
        run_agent(settings)
    except OutboxError as exc:
        raise SystemExit(f"monitoring-ws agent: {exc}") from None
    return 0


def _enroll(args: argparse.Namespace) -> int:
    """``agent enroll --url https://HOST:PORT --token T [--agent-id ID] [--output FILE]``."""
    import json  # noqa: PLC0415

    from ..agent.enroll import EnrollError, enroll  # noqa: PLC0415
    from ..agent.settings import hostname_agent_id, imds_instance_id  # noqa: PLC0415
    from ..private import write_private  # noqa: PLC0415

    setup_logging(verbose=args.verbose, log_format=args.log_format)
    if args.token:
        warn_secret_in_argv("--token", JOIN_TOKEN_ENV)
    token = args.token or os.environ.get(JOIN_TOKEN_ENV, "")
    if not args.url or not token:
        raise SystemExit(
            f"monitoring-ws agent enroll: give --url https://HOST:PORT and the join token "
            f"(${JOIN_TOKEN_ENV}, or --token) that `monitoring-ws token create` printed"
        )
    agent_id = args.agent_id or imds_instance_id() or hostname_agent_id()
    try:
        settings = enroll(args.url, token, agent_id, insecure=args.insecure)
    except EnrollError as exc:
        raise SystemExit(f"monitoring-ws agent enroll: {exc}") from None
    if args.state_dir:
        settings["stateDir"] = str(Path(args.state_dir).resolve())
    output = args.output or Path("agent.json")
    write_private(output, json.dumps(settings, indent=2) + "\n")
    print(f"enrolled as {agent_id}; wrote {output} (mode 0600: it holds the agent's key)")
    return 0


def _setup(args: argparse.Namespace) -> int:
    """``agent setup --home DIR --launcher FILE --python FILE [--config F --unit FILE]``."""
    from ..install.layout import render_launcher, render_unit  # noqa: PLC0415

    if not (args.home and args.launcher and args.python):
        raise SystemExit("monitoring-ws agent setup: give --home, --launcher and --python")
    if args.unit and not args.config:
        raise SystemExit("monitoring-ws agent setup: --unit needs --config (the settings file)")
    launcher = args.launcher.resolve()
    text = render_launcher(args.home.resolve(), args.python, launcher)
    _replace(launcher, text, 0o755)
    if args.unit:
        _replace(args.unit, render_unit(launcher, config=args.config.resolve()), 0o644)
    return 0


def _replace(path: Path, text: str, mode: int) -> None:
    """Write ``path`` whole or not at all (a new file renamed over the old)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    staged = path.with_name(f".{path.name}.new")
    staged.write_text(text, encoding="utf-8")
    staged.chmod(mode)
    staged.replace(path)
