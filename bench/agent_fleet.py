"""Run many real agents (``monitoring_ws.agent.Agent``) in one process, for storm tests.

    .venv/bin/python bench/agent_fleet.py --url ws://127.0.0.1:4000/agent --prefix a --count 500

Secret from MONITORING_WS_SECRET. Agents keep their outboxes in memory; collectors are
slowed down (one sample a minute) so the process spends its time on connections. Loopback
only. Runs until SIGTERM/SIGINT.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
from typing import Any

import trio

from fleet import raise_open_file_limit
from monitoring_ws.agent.client import Agent
from monitoring_ws.agent.runner import CommandRunner
from monitoring_ws.agent.settings import AgentSettings
from monitoring_ws.configbase import is_loopback
from monitoring_ws.protocol import derive_agent_key


async def ping(args: dict[str, Any], context: object) -> dict[str, Any]:
    return {"pong": True}


async def run(url: str, prefix: str, count: int, secret: str) -> None:
    async with trio.open_nursery() as nursery:
        for index in range(count):
            agent_id = f"{prefix}-{index:05d}"
            settings = AgentSettings(
                url=url,
                agent_id=agent_id,
                key=derive_agent_key(secret, agent_id),
                metrics_interval_s=60.0,
            )
            nursery.start_soon(Agent(settings, CommandRunner(settings, {"ping": ping})).run)
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            async for _ in signals:
                nursery.cancel_scope.cancel()
                return


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--prefix", required=True)
    parser.add_argument("--count", type=int, required=True)
    options = parser.parse_args()
    host = options.url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)[0]
    if not is_loopback(host.strip("[]")):
        raise SystemExit("agent_fleet.py dials loopback only")
    raise_open_file_limit()
    logging.basicConfig(level=logging.ERROR)  # a storm makes every agent say it reconnects
    trio.run(run, options.url, options.prefix, options.count, os.environ["MONITORING_WS_SECRET"])


if __name__ == "__main__":
    main()
