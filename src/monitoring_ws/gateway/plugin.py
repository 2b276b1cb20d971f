"""The WebSocket gateway as a monitoring-module plugin (entry point ``websocket``)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..protocol import Keyring
from ..transports import Transport
from ..transports.websocket import WebSocketTransport
from .config import GatewayConfig, load_config
from .gateway import Gateway
from .secrets import resolve_master_secrets

__all__ = ["WebSocketPlugin"]


class WebSocketPlugin:
    """Its settings table holds ``GatewayConfig`` fields (docs/gateway.md)."""

    name = "websocket"

    def __init__(self, settings: Mapping[str, Any]) -> None:
        self.config: GatewayConfig = load_config(None, **settings)
        keyring = Keyring(
            resolve_master_secrets(self.config), seed_compatible=self.config.seed_compatible
        )
        self.gateway = Gateway(self.config, keyring)
        self._transport = WebSocketTransport(self.gateway)

    def transports(self) -> Sequence[Transport]:
        return (self._transport,)

    async def shutdown(self) -> None:
        self.gateway.shutdown()
        await self.gateway.wait_closed(5)
