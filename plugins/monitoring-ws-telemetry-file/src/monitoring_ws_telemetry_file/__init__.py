"""A telemetry sink for the monitoring module: every accepted metrics sample and log
batch as one JSON line, in a file rotated by size (``telemetry.jsonl``, ``.1``, ...).

Enable it in monitoring.toml::

    [plugins.telemetry_file]
    enabled = true
    path = "/var/lib/monitoring-ws/telemetry.jsonl"   # default: <state_dir>/telemetry.jsonl
    max_bytes = 67108864                              # rotate past this size
    backups = 5                                       # rotated files kept

Each line: ``{"type": "metrics", "agentId": ..., "ts": ..., "values": {...}}`` or
``{"type": "log", "agentId": ..., "entries": [...]}``. The host gives the sink its own
bounded queue: a slow disk drops lines (counted), never agents' messages.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import trio

from monitoring_ws.plugin_api import (
    ConfigError,
    PluginBase,
    PluginContext,
    RotatingJsonLines,
    TelemetryItem,
    TelemetrySink,
)

__all__ = ["JsonLinesSink", "TelemetryFilePlugin"]

_KEYS = {"path", "max_bytes", "backups"}


class JsonLinesSink:
    """Each batch appended in a worker thread (``RotatingJsonLines`` rotates the file)."""

    name = "telemetry_file"

    def __init__(self, path: Path, max_bytes: int, backups: int) -> None:
        self.file = RotatingJsonLines(path, max_bytes=max_bytes, backups=backups)
        self.lines = 0

    async def write(self, items: Sequence[TelemetryItem]) -> None:
        lines = [item.to_json() for item in items]
        await trio.to_thread.run_sync(self.file.append, lines)
        self.lines += len(items)


def _settings(settings: Mapping[str, Any], context: PluginContext) -> tuple[Path, int, int]:
    unknown = sorted(set(settings) - _KEYS)
    if unknown:
        raise ConfigError(f"unknown key {', '.join(unknown)} (known: {', '.join(sorted(_KEYS))})")
    path = Path(settings.get("path", context.server.state_dir / "telemetry.jsonl")).expanduser()
    max_bytes, backups = settings.get("max_bytes", 64 << 20), settings.get("backups", 5)
    if not isinstance(max_bytes, int) or isinstance(max_bytes, bool) or max_bytes < 1024:
        raise ConfigError("max_bytes must be an integer of at least 1024")
    if not isinstance(backups, int) or isinstance(backups, bool) or not 0 <= backups <= 100:
        raise ConfigError("backups must be an integer from 0 to 100")
    return path, max_bytes, backups


class TelemetryFilePlugin(PluginBase):
    name = "telemetry_file"

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        self.sink = JsonLinesSink(*_settings(settings, context))

    @staticmethod
    def validate(settings: Mapping[str, Any], context: PluginContext) -> None:
        _settings(settings, context)

    def sinks(self) -> Sequence[TelemetrySink]:
        return (self.sink,)
