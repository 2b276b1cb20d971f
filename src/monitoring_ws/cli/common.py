"""What the commands share: secrets from the environment, warnings, logging, running a
server with one-line errors."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from typing import Any

__all__ = [
    "API_TOKENS_ENV",
    "SECRET_ENV",
    "add_log_format",
    "run_server",
    "secret_from_env",
    "setup_logging",
    "warn_secret_in_argv",
]

SECRET_ENV = "MONITORING_WS_SECRET"  # noqa: S105 - a variable name, not a secret
API_TOKENS_ENV = "MONITORING_WS_API_TOKENS"  # as monitoring_ws.host.config says


def secret_from_env() -> str:
    secret = os.environ.get(SECRET_ENV, "")
    if not secret:
        raise SystemExit(
            f"monitoring-ws: no master secret: set {SECRET_ENV} in the environment "
            "(it is never read from the command line, where other users could see it)"
        )
    return secret


def warn_secret_in_argv(flag: str, instead: str) -> None:
    """A secret given as a flag is visible to every user in ``ps``: say so, and how not to."""
    print(
        f"monitoring-ws: warning: {flag} on the command line is visible to other users "
        f"(ps, /proc); use {instead} instead",
        file=sys.stderr,
    )


def setup_logging(*, verbose: bool, log_format: str = "text") -> None:
    from ..logformat import setup_logging as setup  # noqa: PLC0415 - light commands stay light

    setup(verbose=verbose, log_format=log_format)


def add_log_format(parser: Any) -> None:
    parser.add_argument(
        "--log-format",
        choices=("text", "json"),
        default="text",
        help="json: one JSON object a line (agent_id, session_id, command_id, address)",
    )


#: sysexits.h: a configuration error. The units' RestartPreventExitStatus=78 keeps a bad
#: file from restarting for ever.
EX_CONFIG = 78


def run_server(run: Callable[[], None]) -> None:
    """Run; a failure to bind or to open the state database (inside trio's exception
    groups) becomes a one-line message."""
    from ..configbase import ConfigError  # noqa: PLC0415
    from ..host.plugins import PluginError, StartupError  # noqa: PLC0415

    try:
        run()
    except* (ConfigError, PluginError) as group:
        print(f"monitoring-ws: {_leaf(group)}", file=sys.stderr)
        raise SystemExit(EX_CONFIG) from None  # systemd does not restart on it
    except* StartupError as group:
        failure = _leaf(group)
        hint = getattr(failure, "hint", "")
        raise SystemExit(f"monitoring-ws: {failure}" + (f" ({hint})" if hint else "")) from None
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
