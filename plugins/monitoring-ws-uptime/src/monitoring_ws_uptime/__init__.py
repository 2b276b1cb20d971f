"""An agent command plugin: ``uptime`` reports boot time, uptime and logged-in users."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

import psutil

from monitoring_ws.agent.handlers import CommandContext

__all__ = ["uptime"]


async def uptime(args: Mapping[str, Any], context: CommandContext) -> dict[str, Any]:
    """``{"bootTime", "uptimeS", "users": [{"name", "terminal", "host", "started"}]}``."""
    boot = psutil.boot_time()
    return {
        "bootTime": int(boot),
        "uptimeS": int(time.time() - boot),
        "users": [
            {"name": u.name, "terminal": u.terminal, "host": u.host, "started": int(u.started)}
            for u in psutil.users()
        ],
    }
