"""``monitoring-ws ctl``: the operator's client (monitoring_ws/ctl, docs/cli.md)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

__all__ = ["add"]


def add(commands: Any) -> None:
    ctl = commands.add_parser(
        "ctl",
        help="the API from a terminal: agents, labels, commands, jobs",
        description="A client of the HTTP API. Server and token: flags, then "
        "MONITORING_WS_API_URL and MONITORING_WS_TOKEN, then client.json in "
        "$XDG_CONFIG_HOME/monitoring-ws (0600).",
    )
    ctl.add_argument("--url", help="the API's base URL (default http://127.0.0.1:4000)")
    ctl.add_argument("--token-file", type=Path, help="a file holding the API token")
    ctl.add_argument("--cert-sha256", help="pin the server certificate (hex SHA-256)")
    ctl.add_argument("--config", type=Path, help="the client config file")
    ctl.add_argument("-o", "--output", choices=("table", "json", "wide"), default="table")
    ctl.set_defaults(run=_run, ctl=None)
    nouns = ctl.add_subparsers(dest="noun", metavar="WHAT")
    _add_agents_and_run(nouns)
    _add_jobs_and_records(nouns)
    _add_watching(nouns)
    _add_keys(nouns)


def _add_keys(nouns: Any) -> None:
    keys = nouns.add_parser(
        "keys", help="operator keys: commands signed so that a stolen server runs nothing"
    ).add_subparsers(dest="verb", metavar="VERB")
    create = keys.add_parser("create", help="a new Ed25519 key; prints its public key last")
    create.add_argument("name")
    create.add_argument("--passphrase", action="store_true", help="seal it with a passphrase")
    create.add_argument("--default", action="store_true", help="sign with it by default")
    create.set_defaults(ctl="keys create")
    listing = keys.add_parser("list", help="this operator's keys")
    listing.set_defaults(ctl="keys list")
    trust = keys.add_parser(
        "trust",
        help="the agents a selector matches trust exactly these operator keys from now on "
        "(signed by a key they trust now)",
    )
    trust.add_argument("keys", nargs="+", metavar="ed25519:KEY")
    trust.add_argument(
        "--require",
        default="all",
        help="commands that need a signature: all (default), none, or cmd,cmd",
    )
    _job_options(trust, required=True, concurrency="10%")
    _signing_options(trust)
    trust.set_defaults(ctl="keys trust")


def _add_agents_and_run(nouns: Any) -> None:
    agents = nouns.add_parser("agents", help="list, show and label agents").add_subparsers(
        dest="verb", metavar="VERB"
    )
    listing = agents.add_parser("ls", help="agents (a selector: env=prod,role in (web,api))")
    listing.add_argument("selector", nargs="?")
    listing.set_defaults(ctl="agents ls")
    show = agents.add_parser("show", help="one agent")
    show.add_argument("agent")
    show.set_defaults(ctl="agents show")
    label = agents.add_parser("label", help="set (k=v) or remove (k-) operator labels")
    label.add_argument("agent")
    label.add_argument("labels", nargs="+")
    label.set_defaults(ctl="agents label")

    run = nouns.add_parser(
        "run",
        help="run a command line on one agent, or (-l) a job on every agent a selector "
        "matches; output as it comes; Ctrl-C cancels",
    )
    run.add_argument("agent", nargs="?", help="the agent (or -l SELECTOR)")
    _job_options(run, required=False)
    _signing_options(run)
    run.add_argument("words", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    run.set_defaults(ctl="run")

    shell = nouns.add_parser(
        "shell", help="an interactive shell on an agent (its sessions.shell must be on)"
    )
    shell.add_argument("agent")
    _signing_options(shell)
    shell.set_defaults(ctl="shell")
    forward = nouns.add_parser(
        "forward",
        help="forward a loopback port here to HOST:PORT as the agent sees it "
        "(its tunnels.allow must list it)",
    )
    forward.add_argument("agent")
    forward.add_argument("spec", metavar="LOCAL_PORT:HOST:PORT", help="0 picks a free port")
    forward.add_argument("--bind", default="127.0.0.1", help="the local address (loopback)")
    _signing_options(forward)
    forward.set_defaults(ctl="forward")
    update = nouns.add_parser(
        "update",
        help="the agents a selector matches install a signed release (a job; docs/install.md)",
    )
    update.add_argument("version", help="the release, as `monitoring-ws release list` shows it")
    _job_options(update, required=True, concurrency="10%")
    _signing_options(update)
    update.add_argument(
        "--deadline", type=int, default=120, help="seconds to reconnect before rolling back"
    )
    update.set_defaults(ctl="update")


def _add_jobs_and_records(nouns: Any) -> None:
    jobs = nouns.add_parser("jobs", help="fleet jobs").add_subparsers(dest="verb", metavar="VERB")
    job_run = jobs.add_parser("run", help="run a command line on every agent a selector matches")
    _job_options(job_run, required=True)
    _signing_options(job_run)
    job_run.add_argument("words", nargs=argparse.REMAINDER, metavar="-- COMMAND")
    job_run.set_defaults(ctl="jobs run")
    job_ls = jobs.add_parser("ls", help="jobs, newest first")
    job_ls.add_argument("--limit", type=int, default=50)
    job_ls.set_defaults(ctl="jobs ls")
    _show_and_cancel(jobs, "jobs", "a job", "JOB")

    records = nouns.add_parser("commands", help="command records").add_subparsers(
        dest="verb", metavar="VERB"
    )
    record_ls = records.add_parser("ls", help="command history, newest first")
    record_ls.add_argument("--agent")
    record_ls.add_argument("--limit", type=int, default=50)
    record_ls.set_defaults(ctl="commands ls")
    _show_and_cancel(records, "commands", "a command", "COMMAND_ID")


def _show_and_cancel(verbs: Any, noun: str, what: str, metavar: str) -> None:
    for verb in ("show", "cancel"):
        parser = verbs.add_parser(verb, help=f"{verb} {what}")
        parser.add_argument("id", metavar=metavar)
        parser.set_defaults(ctl=f"{noun} {verb}")


def _add_watching(nouns: Any) -> None:
    logs = nouns.add_parser("logs", help="an agent's last log lines; -f: then as they come")
    logs.add_argument("agent")
    logs.add_argument("-f", "--follow", action="store_true")
    logs.add_argument("-n", "--lines", type=int, default=50, help="how many (default 50)")
    logs.set_defaults(ctl="logs")
    events = nouns.add_parser("events", help="live events the server holds; -f: follow")
    events.add_argument("-f", "--follow", action="store_true")
    events.add_argument("--type", help="some of: agent_connected,command,job,log,metrics,...")
    events.add_argument("--agent", help="one agent's only")
    events.set_defaults(ctl="events")
    metrics = nouns.add_parser("metrics", help="an agent's latest metrics sample")
    metrics.add_argument("agent")
    metrics.set_defaults(ctl="metrics")
    completion = nouns.add_parser(
        "completion", help='shell completion: eval "$(monitoring-ws ctl completion bash)"'
    )
    completion.add_argument("shell", choices=("bash", "zsh"))
    completion.set_defaults(ctl="completion", run=_completion)


def _job_options(
    parser: argparse.ArgumentParser, *, required: bool, concurrency: str = "50"
) -> None:
    parser.add_argument(
        "-l", "--selector", required=required, help="a label selector: env=prod,role in (web,api)"
    )
    parser.add_argument(
        "--max-concurrency",
        default=concurrency,
        help=f"agents at a time: N or N%% (default {concurrency.replace('%', '%%')})",
    )
    parser.add_argument(
        "--max-errors", default="0", help="stop after this many failed: N or N%% (default 0)"
    )
    parser.add_argument("--timeout", type=float, default=60.0, help="seconds (default 60)")


def _signing_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--key", metavar="NAME", help="sign with this operator key")
    parser.add_argument(
        "--no-sign", action="store_true", help="send unsigned even when an operator key exists"
    )


def _completion(args: argparse.Namespace) -> int:
    from ..ctl.completion import completion_script  # noqa: PLC0415 - only this needs it
    from . import build_parser  # noqa: PLC0415 - the whole CLI, plugins' subcommands too

    sys.stdout.write(completion_script(build_parser(), args.shell))
    return 0


def _run(args: argparse.Namespace) -> int:
    from ..ctl.api import Api  # noqa: PLC0415 - only ctl needs it
    from ..ctl.commands import COMMANDS  # noqa: PLC0415
    from ..ctl.settings import CtlError, load_client_settings  # noqa: PLC0415

    if args.ctl is None:
        print(
            "monitoring-ws ctl: say what: agents, run, shell, forward, update, jobs, commands, "
            "logs, events, metrics or completion (--help)",
            file=sys.stderr,
        )
        return 2
    if getattr(args, "words", None) and args.words[0] == "--":
        args.words = args.words[1:]
    try:
        settings = load_client_settings(
            url=args.url,
            token_file=args.token_file,
            cert_sha256=args.cert_sha256,
            config=args.config,
        )
        api = Api(settings)
        try:
            return COMMANDS[args.ctl](api, args, sys.stdout)
        finally:
            api.close()
    except CtlError as exc:
        print(f"monitoring-ws ctl: {exc}", file=sys.stderr)
        return exc.code
    except KeyboardInterrupt:  # before anything was sent, or while following logs/events
        print("\nmonitoring-ws ctl: interrupted", file=sys.stderr)
        return 130
