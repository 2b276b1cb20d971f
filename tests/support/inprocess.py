"""An agent of this process, built from settings as agent.json writes them (the
``monitoring-ws agent`` code path without a subprocess), running in a test's nursery."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import trio

from monitoring_ws.agent.client import Agent
from monitoring_ws.agent.main import build_agent
from monitoring_ws.agent.settings import load_settings

from .eventually import eventually
from .processes import SECRET

__all__ = ["connected_agent"]


async def connected_agent(
    nursery: trio.Nursery, url: str, agent_id: str, state_dir: Path, **settings: Any
) -> Agent:
    """Agent ``agent_id`` dialing ``url`` with the tests' secret and ``settings`` (the JSON
    names: ``operatorKeys``...), once it is connected."""
    agent = build_agent(
        load_settings(
            None,
            wsApiUrl=url,
            wsSecret=SECRET,
            agentId=agent_id,
            stateDir=str(state_dir),
            **settings,
        )
    )
    nursery.start_soon(agent.run)
    await eventually(agent.connected.is_set, what=f"agent {agent_id} connected")
    return agent
