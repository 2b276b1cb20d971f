"""``monitoring-ws agent``: run the agent until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import threading

import trio

from ..sdnotify import notify
from .client import Agent
from .handlers import discover
from .runner import CommandRunner
from .settings import AgentSettings

__all__ = ["build_agent", "run_agent"]

log = logging.getLogger("monitoring_ws.agent")


class ShippingHandler(logging.Handler):
    """Ships the agent's own warnings to the server as ``log`` entries."""

    def __init__(self, agent: Agent) -> None:
        super().__init__(logging.WARNING)
        self.agent = agent
        self._thread = threading.current_thread()
        self._shipping = False

    def emit(self, record: logging.LogRecord) -> None:
        from ..protocol import MessageType  # noqa: PLC0415 - keeps this module light

        # Only from the agent's own thread (the outbox wakes a trio event), and never from
        # inside a put (the outbox's own warning about dropped messages).
        if self._shipping or threading.current_thread() is not self._thread:
            return
        entry = {
            "ts": int(record.created * 1000),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "source": "monitoring-ws-agent",
        }
        self._shipping = True
        try:
            self.agent.outbox.put(MessageType.LOG, {"entries": [entry]})
        finally:
            self._shipping = False


def build_agent(settings: AgentSettings) -> Agent:
    """An agent with every command handler the entry points provide."""
    return Agent(settings, CommandRunner(settings, discover()))


async def _run(agent: Agent) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            # Ready once it can be stopped cleanly, not once connected: a server down at
            # boot would fail the unit's start (the agent keeps trying on its own).
            settings = agent.settings
            notify(f"READY=1\nSTATUS=agent {settings.agent_id} -> {settings.url}")
            async for _ in signals:
                log.info("stopping")
                notify("STOPPING=1")
                nursery.cancel_scope.cancel()
                return


def run_agent(settings: AgentSettings) -> None:
    agent = build_agent(settings)
    shipping = ShippingHandler(agent)
    logging.getLogger("monitoring_ws").addHandler(shipping)
    log.info(
        "agent %s -> %s; commands: %s",
        settings.agent_id,
        settings.url,
        ", ".join(agent.runner.commands),
    )
    try:
        trio.run(_run, agent)
    finally:
        logging.getLogger("monitoring_ws").removeHandler(shipping)
