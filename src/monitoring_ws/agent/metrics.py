"""One metrics sample from psutil (docs/protocol.md, "metrics")."""

from __future__ import annotations

import os
import time
from typing import Any

import psutil

__all__ = ["collect"]

# Pseudo and container file systems say nothing about the host's disks.
_SKIP_FSTYPES = {"squashfs", "tmpfs", "devtmpfs", "overlay", "proc", "sysfs", "nsfs", "tracefs"}


def _disks() -> list[dict[str, Any]]:
    disks = []
    for part in psutil.disk_partitions(all=False):
        if part.fstype in _SKIP_FSTYPES:
            continue
        try:
            usage = psutil.disk_usage(part.mountpoint)
        except OSError:
            continue
        disks.append(
            {
                "mount": part.mountpoint,
                "total": usage.total,
                "used": usage.used,
                "percent": usage.percent,
            }
        )
    return disks


def collect() -> dict[str, Any]:
    """CPU, load, memory, swap, disks, disk and network I/O, uptime, processes."""
    memory = psutil.virtual_memory()
    swap = psutil.swap_memory()
    io = psutil.disk_io_counters()
    net = psutil.net_io_counters()
    return {
        "cpu": {"percent": psutil.cpu_percent(interval=None), "count": psutil.cpu_count()},
        "load": list(os.getloadavg()),
        "memory": {
            "total": memory.total,
            "available": memory.available,
            "used": memory.used,
            "percent": memory.percent,
        },
        "swap": {"total": swap.total, "used": swap.used, "percent": swap.percent},
        "disk": _disks(),
        "diskIo": None
        if io is None
        else {"readBytes": io.read_bytes, "writeBytes": io.write_bytes},
        "netIo": {"bytesSent": net.bytes_sent, "bytesRecv": net.bytes_recv},
        "uptime": int(time.time() - psutil.boot_time()),
        "processes": len(psutil.pids()),
    }
