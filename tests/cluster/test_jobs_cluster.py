"""A job made on one node of a cluster reaches the agents other nodes hold."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from ..conftest import StartServer
from ..test_jobs import Fleet, all_connected, finished
from .helpers import start_node


async def test_a_job_reaches_agents_on_every_node(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path, redis_url: str
) -> None:
    node_a = await start_node(start_server, tmp_path, redis_url, "node-a")
    node_b = await start_node(start_server, tmp_path, redis_url, "node-b")
    fleet = Fleet(tmp_path)
    for index in range(6):
        node = node_a if index % 2 else node_b
        fleet.start(nursery, node.agent_urls[0], f"app-{index}", {"role": "app"})
    async with httpx.AsyncClient(base_url=node_a.api_url, timeout=30) as http:
        await all_connected(http, 6)
        answer = await http.post(
            "/api/jobs", json={"selector": "role=app", "command": "slow", "maxConcurrency": 2}
        )
        assert answer.status_code == 202, answer.text
        job = await finished(http, answer.json()["jobId"])
    assert job["state"] == "succeeded", job
    assert job["counts"]["succeeded"] == 6
    assert sorted(fleet.ran()) == [f"app-{index}" for index in range(6)]
    assert set(fleet.ran().values()) == {1}
