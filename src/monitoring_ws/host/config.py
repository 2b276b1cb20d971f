"""The monitoring module's configuration: ``monitoring.toml`` plus environment overrides."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["ENABLE_ENV_PREFIX", "is_host_config", "load_plugin_settings", "load_transport_options"]

#: ``MONITORING_WS_PLUGIN_<NAME>=on|off`` enables or disables a plugin over the file.
ENABLE_ENV_PREFIX = "MONITORING_WS_PLUGIN_"
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def load_plugin_settings(
    path: Path | None, environ: Mapping[str, str] | None = None
) -> dict[str, dict[str, Any]]:
    """The ``[plugins.NAME]`` tables of the file, with the environment's switches applied."""
    tables: dict[str, dict[str, Any]] = {}
    if path is not None:
        plugins = _document(path).get("plugins", {})
        if not isinstance(plugins, dict) or not all(isinstance(t, dict) for t in plugins.values()):
            raise ValueError(f"{path}: [plugins.NAME] must be tables")
        tables = {name: dict(table) for name, table in plugins.items()}
    for variable, value in (os.environ if environ is None else environ).items():
        if variable.startswith(ENABLE_ENV_PREFIX):
            name = variable.removeprefix(ENABLE_ENV_PREFIX).lower()
            if value.lower() not in _SWITCH:
                raise ValueError(f"{variable} must be on or off, got {value!r}")
            tables.setdefault(name, {})["enabled"] = _SWITCH[value.lower()]
    return tables


def _document(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ValueError(f"cannot read {path}: {exc}") from None


def is_host_config(path: Path) -> bool:
    """Whether the file is a ``monitoring.toml`` (it has ``[plugins.*]`` tables)."""
    return "plugins" in _document(path)


def load_transport_options(path: Path | None) -> dict[str, Any]:
    """The ``[transports]`` table: ``order`` (default websocket, ssm) and ``ssm``."""
    if path is None:
        return {}
    table = _document(path).get("transports", {})
    if not isinstance(table, dict):
        raise ValueError(f"{path}: [transports] must be a table")  # noqa: TRY004 - a config error
    return dict(table)
