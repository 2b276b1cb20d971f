"""What the cluster tests share: in-process nodes and agents that answer commands."""

from __future__ import annotations

from pathlib import Path

import trio

from tests.support.served import Served as Running

from ..conftest import StartServer
from ..gateway.agents import open_agent


async def start_node(
    start_server: StartServer, tmp_path: Path, redis_url: str, name: str
) -> Running:
    """A server on a free port, one node of the cluster behind ``redis_url``."""
    return await start_server(redis_url=redis_url, node_id=name, state_dir=tmp_path / name)


async def serving_agent(
    url: str, agent_id: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    """A test agent that echoes every command's args, until cancelled."""
    async with open_agent(url, agent_id) as agent:
        task_status.started()
        await agent.serve_commands()
