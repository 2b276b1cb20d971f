"""Jobs in a cluster: one made on one node reaches the agents other nodes hold, and one
whose node dies is carried on by another."""

from __future__ import annotations

from pathlib import Path

import httpx
import trio

from ..conftest import StartServer
from ..support import processes
from ..support.eventually import eventually
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


async def test_a_job_whose_node_dies_is_carried_on_by_another(
    nursery: trio.Nursery, tmp_path: Path, redis_url: str
) -> None:
    nodes = []
    for name in ("a", "b"):
        (tmp_path / name).mkdir()
        node = processes.server(tmp_path / name, processes.free_port(), "--redis-url", redis_url)
        await trio.to_thread.run_sync(node.start)
        nodes.append(node)
    node_a = nodes[0]
    url_a, url_b = (f"http://127.0.0.1:{n.args[2].rpartition(':')[2]}" for n in nodes)
    fleet = Fleet(tmp_path)
    try:
        for index in range(8):  # every agent on node b
            agent_url = url_b.replace("http", "ws") + "/agent"
            fleet.start(nursery, agent_url, f"app-{index}", {"role": "app"})
        async with httpx.AsyncClient(base_url=url_a, timeout=30) as http:
            await all_connected(http, 8)
            answer = await http.post(
                "/api/jobs",
                json={
                    "selector": "role=app",
                    "command": "slow",
                    "args": {"seconds": 0.5},
                    "maxConcurrency": 2,
                    "timeoutMs": 60_000,
                },
            )
            assert answer.status_code == 202, answer.text
            job_id = answer.json()["jobId"]
            await eventually(lambda: len(fleet.runs) >= 3, what="three commands ran")
        await trio.to_thread.run_sync(node_a.kill)  # the job's node: no last write
        async with httpx.AsyncClient(base_url=url_b, timeout=30) as http:
            job = await finished(http, job_id)
    finally:
        for node in nodes:
            await trio.to_thread.run_sync(node.stop)
    assert job["state"] == "succeeded", job
    assert job["counts"]["succeeded"] == 8
    assert sorted(fleet.ran()) == [f"app-{index}" for index in range(8)]
    assert set(fleet.ran().values()) == {1}, fleet.ran()  # nobody ran it twice
