"""What serves each listener: Hypercorn (the API, and agents on its port), or the lean
agent listener (``lean.py``) on ``agent_listen``."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Awaitable, Callable, Iterable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

from hypercorn.config import Config as HypercornConfig
from hypercorn.trio import serve as hypercorn_serve

from ...configbase import parse_hostport
from ...web import MAX_BODY_BYTES
from ..config import ServerSettings
from ..plugins import WebSocketRoute
from .lean import LeanSettings, serve_lean, server_context
from .leansocket import MAX_HEAD_BYTES

__all__ = ["DRAIN_TIMEOUT_S", "listener_server"]

#: The API listener's largest request head (Hypercorn parses whatever arrives in one
#: 64 KiB read; agents' listener keeps to 16 KiB).
API_MAX_HEAD_BYTES = 64 * 1024
#: How long plugins may drain, and connections end, at shutdown.
DRAIN_TIMEOUT_S = 5.0


def listener_server(
    asgi: Any,
    bind: str,
    server: ServerSettings,
    *,
    tls: tuple[Path, Path] | None,
    lean_routes: Mapping[str, WebSocketRoute] | None,
    max_message_bytes: int,
    shared_port: bool,
    shutdown_trigger: Callable[[], Awaitable[None]],
    api: bool = False,
) -> Callable[..., Awaitable[Any]]:
    """A ``serve(task_status=...)`` for one listener: lean when ``lean_routes`` are given
    (the WebSocket routes it serves itself; ``asgi`` answers the rest). ``api``: the
    API's listener (kept-alive connections, the app's lifespan)."""
    if lean_routes is not None:
        settings = _lean_settings(lean_routes.values(), server, max_message_bytes, api=api)
        return partial(
            serve_lean,
            {path: route.handler for path, route in lean_routes.items()},
            asgi,
            parse_hostport(bind, "listen" if api else "agent_listen"),
            settings,
            tls=None if tls is None else server_context(*tls),
            shutdown_trigger=shutdown_trigger,
            graceful_timeout_s=DRAIN_TIMEOUT_S,
            reuse_port=shared_port,
            run_lifespan=api,
        )
    config = _hypercorn_config(bind, server, tls, max_message_bytes, shared_port)
    return partial(hypercorn_serve, asgi, config, shutdown_trigger=shutdown_trigger)


def _lean_settings(
    routes: Iterable[WebSocketRoute], server: ServerSettings, max_message_bytes: int, *, api: bool
) -> LeanSettings:
    """The lean listener's limits: before it knows the route, the strictest of them."""
    routes = list(routes)

    def least(values: Iterable[int | None]) -> int | None:
        """The smallest a route sets (None: none does, the listener's default)."""
        return min((value for value in values if value is not None), default=None)

    return LeanSettings(
        max_message_bytes=max_message_bytes,
        max_first_message_bytes=least(r.max_first_message_bytes for r in routes),
        max_unanswered=least(r.max_unauthenticated for r in routes),
        max_unanswered_per_address=least(r.max_unauthenticated_per_address for r in routes),
        handshake_timeout_s=server.tls_handshake_timeout_s,
        body_timeout_s=server.http_body_timeout_s,
        max_body_bytes=MAX_BODY_BYTES,
        # Checked with the config: these parse.
        proxies=tuple(ipaddress.ip_network(p, strict=False) for p in server.trusted_proxies),
        # The API's: kept alive, and heads as large as Hypercorn parses in one read.
        keep_alive=api,
        max_head_bytes=API_MAX_HEAD_BYTES if api else MAX_HEAD_BYTES,
    )


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
