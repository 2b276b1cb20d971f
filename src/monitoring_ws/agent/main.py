"""``monitoring-ws agent``: run the agent until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal

import trio

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

    def emit(self, record: logging.LogRecord) -> None:
        from ..protocol import MessageType  # noqa: PLC0415 - keeps this module light

        entry = {
            "ts": int(record.created * 1000),
            "level": record.levelname.lower(),
            "message": record.getMessage(),
            "source": "monitoring-ws-agent",
        }
        self.agent.outbox.put(MessageType.LOG, {"entries": [entry]})


def build_agent(settings: AgentSettings) -> Agent:
    """An agent with every command handler the entry points provide."""
    return Agent(settings, CommandRunner(settings, discover()))


async def _run(agent: Agent) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                log.info("stopping")
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
