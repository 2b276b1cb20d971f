"""The agent: dials out to the gateway, streams metrics and logs, runs signed commands."""
