"""The ``monitoring-ws`` command."""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from . import __version__
from .gateway.config import REDIS_URL_ENV
from .protocol import (
    AGENT_ID,
    CloseCode,
    ProtocolError,
    Sender,
    check_timestamp,
    decode,
    derive_agent_key,
    parse_agent_key,
    verify,
)

SECRET_ENV = "MONITORING_WS_SECRET"  # noqa: S105 - a variable name, not a secret


def _secret_from_env() -> str:
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise SystemExit(
            f"monitoring-ws: no master secret: set {SECRET_ENV} in the environment "
            "(it is never read from the command line, where other users could see it)"
        )
    return secret


def _derive_key(args: argparse.Namespace) -> int:
    if not AGENT_ID.fullmatch(args.agent_id):
        raise SystemExit(
            f"monitoring-ws: invalid agent id {args.agent_id!r}: use 1-128 characters of "
            "[A-Za-z0-9._:-], starting with a letter or digit (an EC2 instance id works)"
        )
    print(derive_agent_key(_secret_from_env(), args.agent_id).hex())
    return 0


def _check_frame(args: argparse.Namespace) -> int:
    """Explain, check by check, what a receiver would say of one frame."""
    if args.file == "-":
        frame = sys.stdin.read().strip()
    else:
        try:
            with open(args.file, encoding="utf-8") as handle:
                frame = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"monitoring-ws: cannot read {args.file}: {exc}") from None
    sender = Sender(args.sender)
    try:
        message = decode(frame, sender=sender)
    except ProtocolError as error:
        print(f"refused: close {int(error.code)} ({error.code.name}): {error.reason}")
        return 1
    envelope = message.envelope
    print(f"ok   size, JSON, schema: {envelope.type.value} from {envelope.agent_id}")
    print(f"     signing input: {message.signing_input.decode('utf-8')}")
    if args.agent_key:
        _warn_secret_in_argv("--agent-key", "MONITORING_WS_SECRET (the key is derived)")
        try:
            keys: tuple[bytes, ...] = (parse_agent_key(args.agent_key),)
        except ValueError as exc:
            raise SystemExit(f"monitoring-ws: --agent-key: {exc}") from None
    else:
        secret = _secret_from_env()
        keys = (derive_agent_key(secret, envelope.agent_id), secret.encode("utf-8"))
    try:
        check_timestamp(envelope.ts, int(time.time() * 1000))
        print("ok   ts within 300 s of this machine's clock")
    except ProtocolError as error:
        print(f"FAIL {error.reason} (close {int(CloseCode.AUTH_FAILED)})")
    key = verify(keys, message.signing_input, envelope.signature)
    if key is None:
        print(f"FAIL signature does not verify (close {int(CloseCode.AUTH_FAILED)})")
        return 1
    how = "the derived agent key" if key == keys[0] else "the raw master secret (seed mode)"
    print(f"ok   signature verifies with {how}")
    return 0


API_TOKENS_ENV = "MONITORING_WS_API_TOKENS"


def _warn_secret_in_argv(flag: str, instead: str) -> None:
    """A secret given as a flag is visible to every user in ``ps``: say so, and how not to."""
    print(
        f"monitoring-ws: warning: {flag} on the command line is visible to other users "
        f"(ps, /proc); use {instead} instead",
        file=sys.stderr,
    )


def _setup_logging(*, verbose: bool) -> None:
    import logging  # noqa: PLC0415 - the server's imports stay out of the light commands

    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


def _serve(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415 - the server's imports stay out of the light commands

    import trio  # noqa: PLC0415

    from .gateway.config import ConfigError, load_config  # noqa: PLC0415
    from .gateway.serve import raise_open_file_limit, serve, tune_gc  # noqa: PLC0415

    _setup_logging(verbose=args.verbose)
    tokens = [t for t in os.environ.get(API_TOKENS_ENV, "").split(",") if t] or None
    if args.redis_url and "@" in args.redis_url and args.worker_index is None:
        _warn_secret_in_argv("--redis-url with a password", f"{REDIS_URL_ENV} or [cluster]")
    if args.config is not None and _is_host_config(args.config):
        return _serve_host(args, tokens)
    try:
        read = partial(
            load_config, args.config, **_serve_flags(args, tokens), worker_index=args.worker_index
        )
        config = read()
        if args.workers > 1:
            from .cluster.workers import run_workers  # noqa: PLC0415

            return run_workers(config, sys.argv[1:], args.workers)
        soft, _ = raise_open_file_limit()
        logging.getLogger("monitoring_ws.serve").info("open-file limit: %d", soft)
        tune_gc()
        _run_server(lambda: trio.run(partial(serve, config, reload=read)))
    except ConfigError as exc:
        raise SystemExit(f"monitoring-ws: {exc}") from None
    return 0


def _is_host_config(path: Path) -> bool:
    from .host.config import is_host_config  # noqa: PLC0415

    try:
        return is_host_config(path)
    except ValueError as exc:
        raise SystemExit(f"monitoring-ws: {exc}") from None


def _serve_flags(args: argparse.Namespace, tokens: list[str] | None) -> dict[str, Any]:
    """``serve``'s flags as gateway settings (None: not given)."""
    return {
        "listen": args.listen,
        "agent_listen": args.agent_listen,
        "state_dir": args.state_dir,
        "tls_cert": args.tls_cert,
        "tls_key": args.tls_key,
        "tls_self_signed": args.tls_self_signed or None,
        "api_tokens": tokens,
        "redis_url": args.redis_url or os.environ.get(REDIS_URL_ENV) or None,
    }


def _serve_host(args: argparse.Namespace, tokens: list[str] | None) -> int:
    """``serve --config monitoring.toml``: the monitoring module runs its enabled plugins."""
    import trio  # noqa: PLC0415

    from .gateway.serve import raise_open_file_limit, tune_gc  # noqa: PLC0415
    from .host.config import load_plugin_settings, load_transport_options  # noqa: PLC0415
    from .host.plugins import PluginError  # noqa: PLC0415
    from .host.run import run_host  # noqa: PLC0415

    try:
        settings = load_plugin_settings(args.config)
        transports = load_transport_options(args.config)
    except ValueError as exc:
        raise SystemExit(f"monitoring-ws: {exc}") from None
    # Command-line flags are the websocket plugin's settings too.
    flags = _serve_flags(args, tokens)
    websocket = settings.setdefault("websocket", {})
    websocket.update(
        {k: str(v) if isinstance(v, Path) else v for k, v in flags.items() if v is not None}
    )
    raise_open_file_limit()
    tune_gc()
    try:
        _run_server(lambda: trio.run(run_host, settings, transports))
    except PluginError as exc:
        raise SystemExit(f"monitoring-ws: {exc}") from None
    return 0


def _run_server(run: Callable[[], None]) -> None:
    """Run; a failure to bind or to open the state database (inside trio's exception
    groups) becomes a one-line message."""
    from .cluster.node import ClusterError  # noqa: PLC0415
    from .gateway.store import StoreError  # noqa: PLC0415

    try:
        run()
    except* StoreError as group:
        raise SystemExit(f"monitoring-ws: {_leaf(group)} (see --state-dir)") from None
    except* ClusterError as group:
        raise SystemExit(f"monitoring-ws: {_leaf(group)}") from None
    except* OSError as group:
        raise SystemExit(
            f"monitoring-ws: cannot listen: {_leaf(group)} (is another server on that port? "
            "choose another with --listen HOST:PORT)"
        ) from None


def _leaf(group: BaseExceptionGroup[Any]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _agent(args: argparse.Namespace) -> int:

    from .agent.main import run_agent  # noqa: PLC0415
    from .agent.outbox import OutboxError  # noqa: PLC0415
    from .agent.settings import SettingsError, load_settings  # noqa: PLC0415

    _setup_logging(verbose=args.verbose)
    if args.agent_key:
        _warn_secret_in_argv("--agent-key", "MONITORING_WS_AGENT_KEY or wsAgentKey in the file")
    if args.secret:
        _warn_secret_in_argv("--secret", "MONITORING_WS_SECRET or the config file")
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
        run_agent(settings)
    except (SettingsError, OutboxError) as exc:
        raise SystemExit(f"monitoring-ws agent: {exc}") from None
    return 0


def _agent_config(args: argparse.Namespace) -> int:
    import json  # noqa: PLC0415

    from .gateway.agent_config import agent_config, write_private  # noqa: PLC0415
    from .gateway.config import ConfigError, load_config  # noqa: PLC0415
    from .gateway.secrets import resolve_master_secrets  # noqa: PLC0415

    _setup_logging(verbose=False)
    try:
        config = load_config(args.config, state_dir=args.state_dir)
        secret = resolve_master_secrets(config)[0]
        settings = agent_config(
            config,
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


def _plugins(args: argparse.Namespace) -> int:
    from .agent.handlers import ENTRY_POINT_GROUP  # noqa: PLC0415
    from .host.config import load_plugin_settings  # noqa: PLC0415
    from .host.plugins import PLUGIN_GROUP, PluginError, discover  # noqa: PLC0415

    try:
        found = discover(load_plugin_settings(args.config))
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


def _demo(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415

    from .demo import run_demo  # noqa: PLC0415

    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    run_demo(args.agents, keep=args.keep, listen=args.listen)
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="monitoring-ws",
        description="Signed WebSocket transport between a monitoring server and its agents.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")

    derive = commands.add_parser(
        "derive-key",
        help=f"print an agent's derived key (hex) from the master secret in ${SECRET_ENV}",
    )
    derive.add_argument("agent_id", metavar="AGENT_ID")
    derive.set_defaults(run=_derive_key)

    check = commands.add_parser(
        "check-frame",
        help="explain what a receiver says of one JSON frame (for agent implementers)",
    )
    check.add_argument("file", nargs="?", default="-", help="file with the frame (default: stdin)")
    check.add_argument(
        "--sender",
        choices=[s.value for s in Sender],
        default=Sender.AGENT.value,
        help="who wrote the frame (the payload schema depends on it)",
    )
    check.add_argument(
        "--agent-key",
        metavar="HEX",
        help=f"verify with this derived key instead of the secret in ${SECRET_ENV}",
    )
    check.set_defaults(run=_check_frame)

    _add_serve(commands)

    agent = commands.add_parser(
        "agent",
        help="run the agent: dial out to the server, stream metrics and logs, run commands",
        description="Settings: --config FILE (JSON, the seed's shape), MONITORING_WS_* "
        "variables, then these flags (docs/agent.md).",
    )
    agent.add_argument("--config", type=Path, metavar="FILE", help="JSON settings file")
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
    agent.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    agent.set_defaults(run=_agent)

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
    config_cmd.add_argument("--config", type=Path, metavar="FILE", help="the server's config")
    config_cmd.add_argument("--state-dir", type=Path, metavar="DIR", help="the server's state")
    config_cmd.add_argument("--output", type=Path, metavar="FILE", help="write it (mode 0600)")
    config_cmd.add_argument("--imds-endpoint", help=argparse.SUPPRESS)
    config_cmd.set_defaults(run=_agent_config)

    plugins = commands.add_parser(
        "plugins", help="list installed plugins and whether monitoring.toml enables them"
    )
    plugins.add_argument("--config", type=Path, metavar="FILE", help="monitoring.toml")
    plugins.set_defaults(run=_plugins)

    demo = commands.add_parser(
        "demo", help="a server, local agents and command round trips, on loopback"
    )
    demo.add_argument("--agents", type=int, default=3, help="how many local agents (default 3)")
    demo.add_argument("--keep", action="store_true", help="stay up until Ctrl-C")
    demo.add_argument(
        "--listen", default="127.0.0.1:0", metavar="HOST:PORT", help="default: a free port"
    )
    demo.set_defaults(run=_demo)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    result: int = args.run(args)
    return result


def _add_serve(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the gateway: the HTTP API and the /agent WebSocket endpoint",
        description=(
            "Run the gateway. The master secret comes from boto3's credential chain "
            "(e.g. AWS_SECRET_ACCESS_KEY) unless the config file sets master_secrets. "
            f"API bearer tokens: ${API_TOKENS_ENV} (comma-separated) or the config file."
        ),
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="API and agents (default 127.0.0.1:4000)"
    )
    serve.add_argument(
        "--agent-listen", metavar="HOST:PORT", help="a second listener serving only /agent"
    )
    serve.add_argument(
        "--config", type=Path, metavar="FILE", help="TOML file with a [gateway] table"
    )
    serve.add_argument("--state-dir", type=Path, metavar="DIR", help="where state is kept")
    serve.add_argument(
        "--workers",
        type=int,
        default=1,
        metavar="N",
        help="N node processes sharing the port (needs --redis-url)",
    )
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--redis-url",
        metavar="URL",
        help="run as one node of a cluster sharing this Redis, e.g. redis://127.0.0.1:6379",
    )
    serve.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate for wss://")
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key for wss://")
    serve.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="generate a self-signed certificate once in the state dir; agents pin its fingerprint",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    serve.set_defaults(run=_serve)
