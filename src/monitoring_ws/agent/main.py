"""``monitoring-ws agent``: run the agent until SIGINT/SIGTERM."""

from __future__ import annotations

import logging
import signal
import sys
import threading

import trio

from .. import __version__
from ..install.layout import AgentHome
from ..sdnotify import notify
from .client import Agent
from .handlers import discover
from .runner import CommandRunner
from .settings import AgentSettings
from .update import report_last_update, restart_through, watch_trial

__all__ = ["build_agent", "run_agent"]

log = logging.getLogger("monitoring_ws.agent")
#: How long a restart waits for the server to acknowledge what the outbox holds.
RESTART_DRAIN_S = 5.0


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


async def _restart_when_asked(agent: Agent, scope: trio.CancelScope) -> None:
    await agent.restarting.wait()
    with trio.move_on_after(RESTART_DRAIN_S):  # the server should have the answer first
        while len(agent.outbox):
            await agent.outbox.forgotten_event().wait()
    log.info("restarting")
    scope.cancel()


async def _run(agent: Agent, home: AgentHome | None) -> None:
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        if home is not None:
            report_last_update(home)
            nursery.start_soon(
                # The agent's event is replaced at each connection: asked afresh each time.
                watch_trial,
                home,
                lambda: agent.connected.is_set(),  # noqa: PLW0108
                agent.restarting,
            )
            nursery.start_soon(_restart_when_asked, agent, nursery.cancel_scope)
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
    # Installed by install.sh or the package: the launcher can run another release.
    home = AgentHome.from_environment()
    shipping = ShippingHandler(agent)
    logging.getLogger("monitoring_ws").addHandler(shipping)
    log.info(
        "agent %s %s -> %s; commands: %s",
        settings.agent_id,
        __version__,
        settings.url,
        ", ".join(agent.runner.commands),
    )
    try:
        trio.run(_run, agent, home)
    finally:
        logging.getLogger("monitoring_ws").removeHandler(shipping)
    if home is not None and agent.restarting.is_set():
        agent.outbox.close()
        restart_through(home, sys.argv[1:])
