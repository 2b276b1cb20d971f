"""The WebSocket gateway: the monitoring module's `websocket` plugin (docs/architecture.md)."""
