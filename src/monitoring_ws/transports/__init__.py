"""Transports: how the monitoring module reaches an agent (WebSocket, SSM, plugins)."""

from .base import (
    IN_PROCESS,
    REQUESTER,
    AgentGoneError,
    AgentNotConnectedError,
    ClusterUnavailableError,
    CommandNotSupportedError,
    CommandOutcome,
    CommandTimeoutError,
    CommandTooLargeError,
    InvalidCommandError,
    Requester,
    ShuttingDownError,
    StateUnavailableError,
    Transport,
    TransportError,
)

__all__ = [
    "IN_PROCESS",
    "REQUESTER",
    "AgentGoneError",
    "AgentNotConnectedError",
    "ClusterUnavailableError",
    "CommandNotSupportedError",
    "CommandOutcome",
    "CommandTimeoutError",
    "CommandTooLargeError",
    "InvalidCommandError",
    "Requester",
    "ShuttingDownError",
    "StateUnavailableError",
    "Transport",
    "TransportError",
]
