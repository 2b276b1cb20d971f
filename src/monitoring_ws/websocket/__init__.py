"""The ``websocket`` plugin: the gateway (``monitoring_ws.gateway``) and, for several
nodes, its Redis parts (``monitoring_ws.cluster``), put together (docs/architecture.md)."""

from .plugin import WebSocketPlugin

__all__ = ["WebSocketPlugin"]
