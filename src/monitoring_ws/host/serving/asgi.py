"""The ASGI apps the host's Hypercorn serves: plugins' WebSocket routes raw, HTTP through
the Quart app."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from hypercorn.protocol import ws_stream
from wsproto.extensions import Extension

from ..plugins import TOO_BIG

if TYPE_CHECKING:
    from collections.abc import Mapping

    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope, WebsocketScope
    from quart import Quart

    from ..api.commandroutes import LeanCommandRoutes
    from ..metrics import ServerMetrics
    from ..plugins import AsgiHandler, WebSocketRoute

__all__ = ["HostApp", "MetricsApp", "adapt_hypercorn_websockets"]


class _NoCompression(Extension):
    """Stands where Hypercorn's handshake expects permessage-deflate, and matches no offer."""

    name = "x-monitoring-ws-no-compression"

    def enabled(self) -> bool:
        return False

    def offer(self) -> bool:  # a server never offers
        return False


class _TellingBuffer(ws_stream.WebsocketBuffer):
    """Hypercorn's frame buffer, except that a frame over the limit is dropped as it comes
    (not held) and then reported to the app instead of closed silently.

    Hypercorn closes such a connection with 1009 without telling the application; the
    gateway then only saw a dead socket. Now the connection learns the frame's length,
    closes with 1009 itself and logs it with the agent's id.
    """

    too_big = False

    def extend(self, event: Any) -> None:
        if self.too_big:
            self.length += len(event.data)
            return
        try:
            super().extend(event)
        except ws_stream.FrameTooLargeError:
            self.too_big, self.value = True, None

    def clear(self) -> None:
        super().clear()
        self.too_big = False

    def to_message(self) -> dict[str, Any]:
        if self.too_big:
            return {"type": "websocket.receive", "bytes": None, "text": None, TOO_BIG: self.length}
        message: dict[str, Any] = super().to_message()
        return message


def adapt_hypercorn_websockets() -> None:
    """Make Hypercorn's websocket handshake decline permessage-deflate, and report frames
    over the limit to the app (``TOO_BIG``) instead of closing silently.

    Hypercorn accepts whatever compression a client offers and has no setting for it;
    a compressed idle connection costs ~149 KB instead of ~22 KB (docs/performance.md).
    Its handshake looks ``PerMessageDeflate`` up in its module on every upgrade, and each
    stream builds its ``WebsocketBuffer`` the same way, so pointing those names at our
    classes changes both. tests/gateway/test_agent_endpoint.py checks an offer is
    declined; tests/gateway/test_frame_limits.py that an oversized frame is reported.
    """
    setattr(ws_stream, "PerMessageDeflate", _NoCompression)  # noqa: B010 - not re-exported
    setattr(ws_stream, "WebsocketBuffer", _TellingBuffer)  # noqa: B010 - the same way


async def _websocket(
    routes: Mapping[str, WebSocketRoute],
    scope: WebsocketScope,
    receive: ASGIReceiveCallable,
    send: ASGISendCallable,
) -> None:
    route = routes.get(scope["path"])
    if route is not None:
        await route.handler(scope, receive, send)
    else:  # closed before accept: Hypercorn answers 403
        await send({"type": "websocket.close", "code": 1000, "reason": ""})


class HostApp:
    """A listener: the plugins' WebSocket routes and raw HTTP routes for agents, then the
    API (``api``, its WebSocket routes too); without one (``agent_listen``) a JSON 404
    for anything else."""

    def __init__(
        self,
        api: Quart | None,
        routes: Mapping[str, WebSocketRoute],
        http_routes: Mapping[str, AsgiHandler] | None = None,
        commands: LeanCommandRoutes | None = None,
    ) -> None:
        self.api = api
        self.routes = routes
        self.http_routes = http_routes or {}
        #: The routes that take what is under them, longest first (looked up per request).
        self._under = sorted((p for p in self.http_routes if p.endswith("/")), key=len)[::-1]
        #: The command POSTs, answered ahead of the API's framework.
        self.commands = commands

    def _http_route(self, path: str) -> AsgiHandler | None:
        """The route for ``path``: its own, or the longest one ending in "/" above it."""
        route = self.http_routes.get(path)
        if route is None:
            above = next((p for p in self._under if path.startswith(p)), None)
            route = None if above is None else self.http_routes[above]
        return route

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        lean = None if self.commands is None else self.commands.match(scope)
        if lean is not None:
            assert self.commands is not None  # noqa: S101 - it matched
            await self.commands.serve(*lean, scope, receive, send)
        elif scope["type"] == "websocket" and (scope["path"] in self.routes or self.api is None):
            await _websocket(self.routes, scope, receive, send)
        elif scope["type"] == "http" and (route := self._http_route(scope["path"])):
            await route(scope, receive, send)
        elif self.api is not None:
            await self.api(scope, receive, send)
        elif scope["type"] == "http":
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json")],
                    "trailers": False,
                }
            )
            await send({"type": "http.response.body", "body": _ONLY_AGENTS, "more_body": False})
        elif scope["type"] == "lifespan":
            await _lifespan(receive, send)


_ONLY_AGENTS = b'{"error": {"code": "not_found", "message": "this listener serves agents only"}}'


async def _lifespan(receive: ASGIReceiveCallable, send: ASGISendCallable) -> None:
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class MetricsApp:
    """The ``metrics_listen`` listener: ``GET /metrics`` without a token, nothing else."""

    def __init__(self, metrics: ServerMetrics) -> None:
        self.metrics = metrics

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        if scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        found = scope["path"] == "/metrics" and scope["method"] in {"GET", "HEAD"}
        body = self.metrics.exposition() if found else b"not found\n"
        content_type = b"text/plain; version=0.0.4; charset=utf-8" if found else b"text/plain"
        await send(
            {
                "type": "http.response.start",
                "status": 200 if found else 404,
                "headers": [(b"content-type", content_type)],
                "trailers": False,
            }
        )
        await send({"type": "http.response.body", "body": body, "more_body": False})
