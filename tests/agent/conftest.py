"""The agent tests run against the same real gateway fixtures."""

from ..gateway.conftest import http, server, start_server

__all__ = ["http", "server", "start_server"]
