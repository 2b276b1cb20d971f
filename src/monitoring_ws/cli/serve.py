"""``serve``: the monitoring module's server, from monitoring.toml and flags."""

from __future__ import annotations

import argparse
import os
import sys
from functools import partial
from pathlib import Path
from typing import Any

from ..configbase import add_config_option
from ..host.config import API_TOKENS_ENV, REDIS_URL_ENV
from .common import EX_CONFIG, add_log_format, run_server, setup_logging, warn_secret_in_argv

__all__ = ["add", "read_config"]


def add(commands: Any) -> None:
    serve = commands.add_parser(
        "serve",
        help="run the server: the HTTP API, the plugins, and the /agent WebSocket endpoint",
        description=(
            "Run the monitoring module's server. Settings come from --config (monitoring.toml: "
            "[server], [transports], [cluster], [plugins.NAME]; an old [gateway] file is "
            "translated with a warning), and flags override the file. The master secret "
            "comes from boto3's credential chain (e.g. AWS_SECRET_ACCESS_KEY) unless "
            f"[plugins.websocket] sets master_secrets. API bearer tokens: ${API_TOKENS_ENV} "
            "(comma-separated) or [server] api_tokens."
        ),
    )
    serve.add_argument(
        "--listen", metavar="HOST:PORT", help="API and agents (default 127.0.0.1:4000)"
    )
    serve.add_argument(
        "--agent-listen",
        metavar="HOST:PORT",
        help="a second listener for agents only (/agent, /enroll)",
    )
    add_config_option(serve)
    serve.add_argument("--state-dir", type=Path, metavar="DIR", help="where state is kept")
    serve.add_argument(
        "--workers",
        type=int,
        metavar="N",
        help="N server processes sharing the port (needs Redis: --redis-url)",
    )
    serve.add_argument("--worker-index", type=int, help=argparse.SUPPRESS)
    serve.add_argument(
        "--redis-url",
        metavar="URL",
        help=f"run as one node of a cluster sharing this Redis (or ${REDIS_URL_ENV})",
    )
    serve.add_argument("--tls-cert", type=Path, metavar="FILE", help="PEM certificate for wss://")
    serve.add_argument("--tls-key", type=Path, metavar="FILE", help="PEM private key for wss://")
    serve.add_argument(
        "--tls-self-signed",
        action="store_true",
        help="generate a self-signed certificate once in the state dir; agents pin its fingerprint",
    )
    serve.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    add_log_format(serve)
    serve.set_defaults(run=_serve)


def flag_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    """``serve``'s flags (and the environment's tokens and Redis URL) as table overrides;
    None means not given, so the file's value stays."""
    tokens = [t for t in os.environ.get(API_TOKENS_ENV, "").split(",") if t] or None
    return {
        "server": {
            "listen": args.listen,
            "agent_listen": args.agent_listen,
            "state_dir": args.state_dir,
            "tls_cert": args.tls_cert,
            "tls_key": args.tls_key,
            "tls_self_signed": args.tls_self_signed or None,
            "api_tokens": tokens,
        },
        "cluster": {
            "redis_url": args.redis_url or os.environ.get(REDIS_URL_ENV) or None,
            "workers": args.workers,
            "worker_index": args.worker_index,
        },
    }


def read_config(args: argparse.Namespace) -> Any:
    """The settings in force: the file, then the flags. Raises ``ConfigError``."""
    from ..host.config import load_monitoring_config  # noqa: PLC0415

    return load_monitoring_config(args.config, flag_overrides(args))


def _serve(args: argparse.Namespace) -> int:
    import logging  # noqa: PLC0415 - the server's imports stay out of the light commands

    import trio  # noqa: PLC0415

    from ..configbase import ConfigError  # noqa: PLC0415
    from ..host.plugins import PluginError  # noqa: PLC0415
    from ..host.server import serve_host  # noqa: PLC0415
    from ..host.serving.process import raise_open_file_limit, tune_gc  # noqa: PLC0415

    setup_logging(verbose=args.verbose, log_format=args.log_format)
    if args.redis_url and "@" in args.redis_url and args.worker_index is None:
        warn_secret_in_argv("--redis-url with a password", f"{REDIS_URL_ENV} or [cluster]")
    try:
        config = read_config(args)
        if config.cluster.workers > 1 and args.worker_index is None:
            from ..host.workers import run_workers  # noqa: PLC0415

            return run_workers(config, sys.argv[1:])
        if not args.verbose:
            logging.getLogger().setLevel(config.server.log_level.upper())
        soft, _ = raise_open_file_limit()
        logging.getLogger("monitoring_ws.serve").info("open-file limit: %d", soft)
        tune_gc()
        run_server(lambda: trio.run(partial(serve_host, config, reload=partial(read_config, args))))
    except (ConfigError, PluginError) as exc:
        print(f"monitoring-ws: {exc}", file=sys.stderr)
        return EX_CONFIG  # systemd: RestartPreventExitStatus, a bad file is not retried
    return 0
