"""monitoring-ws: signed WebSocket transport between a monitoring server and its agents."""

__version__ = "0.1.0.dev0"

__all__ = ["__version__"]
