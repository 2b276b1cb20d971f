"""The host's HTTP API: the guard over every route, and the transport-neutral routes."""

from .app import create_app

__all__ = ["create_app"]
