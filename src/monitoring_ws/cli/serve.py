"""``serve``: the gateway alone, or the monitoring module's host with a monitoring.toml."""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from ..gateway.config import REDIS_URL_ENV
from .common import API_TOKENS_ENV, run_server, setup_logging, warn_secret_in_argv

__all__ = ["add"]


def add(commands: Any) -> None:
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


def _serve(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415 - the server's imports stay out of the light commands

    import trio  # noqa: PLC0415

    from ..gateway.config import ConfigError, load_config  # noqa: PLC0415
    from ..gateway.serve import raise_open_file_limit, serve, tune_gc  # noqa: PLC0415

    setup_logging(verbose=args.verbose)
    tokens = [t for t in os.environ.get(API_TOKENS_ENV, "").split(",") if t] or None
    if args.redis_url and "@" in args.redis_url and args.worker_index is None:
        warn_secret_in_argv("--redis-url with a password", f"{REDIS_URL_ENV} or [cluster]")
    if args.config is not None and _is_host_config(args.config):
        return _serve_host(args, tokens)
    try:
        read = partial(
            load_config, args.config, **_serve_flags(args, tokens), worker_index=args.worker_index
        )
        config = read()
        if args.workers > 1:
            from ..cluster.workers import run_workers  # noqa: PLC0415

            return run_workers(config, sys.argv[1:], args.workers)
        soft, _ = raise_open_file_limit()
        logging.getLogger("monitoring_ws.serve").info("open-file limit: %d", soft)
        tune_gc()
        run_server(lambda: trio.run(partial(serve, config, reload=read)))
    except ConfigError as exc:
        raise SystemExit(f"monitoring-ws: {exc}") from None
    return 0


def _is_host_config(path: Path) -> bool:
    from ..host.config import is_host_config  # noqa: PLC0415

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

    from ..gateway.serve import raise_open_file_limit, tune_gc  # noqa: PLC0415
    from ..host.config import load_plugin_settings, load_transport_options  # noqa: PLC0415
    from ..host.plugins import PluginError  # noqa: PLC0415
    from ..host.run import run_host  # noqa: PLC0415

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
        run_server(lambda: trio.run(run_host, settings, transports))
    except PluginError as exc:
        raise SystemExit(f"monitoring-ws: {exc}") from None
    return 0
