"""Transports: how the monitoring module reaches an agent (WebSocket, SSM, plugins)."""

from .base import (
    AgentGoneError,
    AgentNotConnectedError,
    CommandNotSupportedError,
    CommandOutcome,
    CommandTimeoutError,
    ShuttingDownError,
    Transport,
    TransportError,
)

__all__ = [
    "AgentGoneError",
    "AgentNotConnectedError",
    "CommandNotSupportedError",
    "CommandOutcome",
    "CommandTimeoutError",
    "ShuttingDownError",
    "Transport",
    "TransportError",
]
