"""What every settings table shares: the error type, addresses, and value checks."""

from __future__ import annotations

import argparse
import ipaddress
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import attrs

__all__ = [
    "ConfigError",
    "is_loopback",
    "one_of",
    "parse_hostport",
    "positive",
    "strings",
]


class ConfigError(ValueError):
    """A setting is wrong; the message says which and how to fix it."""


#: Where commands that read monitoring.toml find it when ``--config`` is not given.
CONFIG_ENV = "MONITORING_WS_CONFIG"


def config_file_default() -> Path | None:
    """``$MONITORING_WS_CONFIG`` as the default of ``--config`` (None when unset)."""
    value = os.environ.get(CONFIG_ENV)
    return Path(value) if value else None


def add_config_option(parser: argparse.ArgumentParser, what: str = "monitoring.toml") -> None:
    """``--config FILE``, defaulting to ``$MONITORING_WS_CONFIG``."""
    parser.add_argument(
        "--config",
        type=Path,
        metavar="FILE",
        default=config_file_default(),
        help=f"{what} (default: ${CONFIG_ENV})",
    )


def parse_hostport(value: str, what: str) -> tuple[str, int]:
    """``HOST:PORT`` or ``[V6]:PORT``; port 0 means any free port."""
    host, sep, port = value.rpartition(":")
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise ConfigError(f"{what}: expected HOST:PORT (e.g. 127.0.0.1:4000), got {value!r}")
    return host.strip("[]"), int(port)


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def positive(_instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ConfigError(f"{attribute.name} must be > 0, got {value}")


def one_of(*choices: str) -> Callable[[Any, attrs.Attribute[Any], Any], None]:
    def check(_instance: Any, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise ConfigError(f"{attribute.name} must be one of {', '.join(choices)}: {value!r}")

    return check


def strings(name: str, value: Any) -> tuple[str, ...]:
    """A TOML list of strings as a tuple; ConfigError for anything else."""
    if isinstance(value, tuple):
        value = list(value)
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"{name} must be a list of strings")
    return tuple(value)


def path(value: Any) -> Path:
    return Path(value).expanduser()
