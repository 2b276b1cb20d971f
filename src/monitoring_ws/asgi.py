"""What the host's server adds to ASGI for plugins' WebSocket endpoints."""

__all__ = ["TOO_BIG"]

#: A key of a ``websocket.receive`` message: a frame over the limit was dropped (not
#: buffered); the value is its length. The endpoint closes with 1009 and says why.
TOO_BIG = "monitoring_ws.too_big"
