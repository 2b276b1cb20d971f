"""The ASGI apps Hypercorn serves: ``/agent`` raw, everything else through Quart."""

from __future__ import annotations

from typing import TYPE_CHECKING

from hypercorn.protocol import ws_stream
from wsproto.extensions import Extension

from .gateway import AGENT_PATH

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, Scope
    from quart import Quart

    from .gateway import Gateway

__all__ = ["AgentOnlyApp", "GatewayApp", "refuse_websocket_compression"]


class _NoCompression(Extension):
    """Stands where Hypercorn's handshake expects permessage-deflate, and matches no offer."""

    name = "x-monitoring-ws-no-compression"

    def enabled(self) -> bool:
        return False

    def offer(self) -> bool:  # a server never offers
        return False


def refuse_websocket_compression() -> None:
    """Make Hypercorn's handshake decline permessage-deflate.

    Hypercorn accepts whatever compression a client offers and has no setting for it;
    a compressed idle connection costs ~149 KB instead of ~22 KB (DESIGN.md section 5).
    Its handshake looks ``PerMessageDeflate`` up in its module on every upgrade, so
    pointing that name at an extension nobody offers turns compression off.
    tests/gateway/test_agent_endpoint.py checks an offer is declined.
    """
    setattr(ws_stream, "PerMessageDeflate", _NoCompression)  # noqa: B010 - not re-exported


async def _not_found(send: ASGISendCallable) -> None:
    await send({"type": "websocket.close", "code": 1000, "reason": ""})


class GatewayApp:
    """The main listener: ``/agent`` and the HTTP API."""

    def __init__(self, gateway: Gateway, api: Quart) -> None:
        self.gateway = gateway
        self.api = api

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket":
            if scope["path"] == AGENT_PATH:
                await self.gateway.agent_endpoint(scope, receive, send)
            else:
                await _not_found(send)  # before accept: Hypercorn answers 403
            return
        await self.api(scope, receive, send)


class AgentOnlyApp:
    """The public agent listener: ``/agent`` and nothing else."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway

    async def __call__(
        self, scope: Scope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["type"] == "websocket" and scope["path"] == AGENT_PATH:
            await self.gateway.agent_endpoint(scope, receive, send)
        elif scope["type"] == "websocket":
            await _not_found(send)
        elif scope["type"] == "http":
            body = (
                b'{"error": {"code": "not_found", "message": "this listener serves /agent only"}}'
            )
            await send(
                {
                    "type": "http.response.start",
                    "status": 404,
                    "headers": [(b"content-type", b"application/json")],
                    "trailers": False,
                }
            )
            await send({"type": "http.response.body", "body": body, "more_body": False})
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await send({"type": "lifespan.shutdown.complete"})
                    return
