"""What serves each listener: Hypercorn (the API, and agents on its port), or the lean
agent listener (``lean.py``) on ``agent_listen``."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ..configbase import parse_hostport
from ..web import MAX_BODY_BYTES
from .config import ServerSettings
from .lean import LeanSettings, serve_lean, server_context

__all__ = ["DRAIN_TIMEOUT_S", "listener_server"]

#: How long plugins may drain, and connections end, at shutdown.
DRAIN_TIMEOUT_S = 5.0


def listener_server(
    asgi: Any,
    bind: str,
    server: ServerSettings,
    *,
    tls: tuple[Path, Path] | None,
    lean_routes: Mapping[str, Callable[..., Any]] | None,
    max_message_bytes: int,
    shared_port: bool,
    shutdown_trigger: Callable[[], Awaitable[None]],
) -> Callable[..., Awaitable[Any]]:
    """A ``serve(task_status=...)`` for one listener: lean when ``lean_routes`` are given
    (the WebSocket routes it serves itself; ``asgi`` then answers plain HTTP)."""
    if lean_routes is not None:
        return partial(
            serve_lean,
            lean_routes,
            asgi,
            parse_hostport(bind, "agent_listen"),
            LeanSettings(
                max_message_bytes=max_message_bytes,
                handshake_timeout_s=server.tls_handshake_timeout_s,
                body_timeout_s=server.http_body_timeout_s,
                max_body_bytes=MAX_BODY_BYTES,
            ),
            tls=None if tls is None else server_context(*tls),
            shutdown_trigger=shutdown_trigger,
            graceful_timeout_s=DRAIN_TIMEOUT_S,
            reuse_port=shared_port,
        )
    config = _hypercorn_config(bind, server, tls, max_message_bytes, shared_port)
    return partial(hypercorn_serve, asgi, config, shutdown_trigger=shutdown_trigger)


def _hypercorn_config(
    bind: str,
    server: ServerSettings,
    tls: tuple[Path, Path] | None,
    max_message_bytes: int,
    shared_port: bool,
) -> HypercornConfig:
    hc = HypercornConfig()
    hc.bind = [bind]
    hc.websocket_max_message_size = max_message_bytes
    hc.graceful_timeout = DRAIN_TIMEOUT_S
    hc.accesslog = None
    hc.errorlog = logging.getLogger("hypercorn.error")  # through our handlers, once
    hc.backlog = 4096  # reconnect storms arrive all at once
    hc.ssl_handshake_timeout = server.tls_handshake_timeout_s
    if shared_port:
        hc.workers = 2  # only so that Hypercorn sets SO_REUSEPORT: each worker is a process
    if tls is not None:
        hc.certfile, hc.keyfile = str(tls[0]), str(tls[1])
    return hc
