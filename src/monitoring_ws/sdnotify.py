"""systemd's readiness protocol (``sd_notify``) without libsystemd: a datagram to
``$NOTIFY_SOCKET``, for units of ``Type=notify`` (deploy/). Outside systemd, nothing."""

from __future__ import annotations

import os
import socket
from collections.abc import Mapping

__all__ = ["notify"]


def notify(state: str, environ: Mapping[str, str] = os.environ) -> bool:
    """Send ``state`` (``READY=1``, ``STOPPING=1``, ``STATUS=...`` lines) to the service
    manager; False when there is none or it cannot be reached (never raises)."""
    path = environ.get("NOTIFY_SOCKET")
    if not path:
        return False
    # "@name" is an abstract socket: its address begins with a NUL byte.
    address = "\0" + path[1:] if path.startswith("@") else path
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as sock:
            sock.connect(address)
            sock.sendall(state.encode())
    except OSError:
        return False
    return True
