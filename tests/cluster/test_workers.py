"""``serve --workers N``: real worker processes sharing one port through Redis."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path

import httpx
import trio

from ..conftest import SECRET
from ..faults import processes
from ..gateway.agents import open_agent
from ..gateway.test_serve_process import isolated_env, run_cli

AGENTS = 20


def _start_workers(tmp_path: Path, port: int, redis_url: str) -> subprocess.Popen[bytes]:
    log = (tmp_path / "workers.log").open("wb")
    command = [sys.executable, "-m", "monitoring_ws", "serve", "--workers", "2"]
    command += ["--listen", f"127.0.0.1:{port}", "--redis-url", redis_url]
    command += ["--state-dir", str(tmp_path / "state")]
    process = subprocess.Popen(
        command,
        stdout=log,
        stderr=subprocess.STDOUT,
        env=isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET),
        cwd=tmp_path,
    )
    deadline = time.monotonic() + 30
    while (tmp_path / "workers.log").read_text().count("API on http://") < 2:
        assert process.poll() is None, (tmp_path / "workers.log").read_text()
        assert time.monotonic() < deadline, "the workers did not start"
        time.sleep(0.1)
    return process


async def test_two_workers_share_the_port_and_every_agent(tmp_path: Path, redis_url: str) -> None:
    port = processes.free_port()
    workers = await trio.to_thread.run_sync(_start_workers, tmp_path, port, redis_url)
    try:
        async with trio.open_nursery() as nursery:
            agents = []
            for index in range(AGENTS):
                agent = await nursery.start(_agent, f"ws://127.0.0.1:{port}/agent", f"w-{index}")
                agents.append(agent)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
                listing = (await http.get("/api/websocket/agents")).json()
                assert listing["count"] == AGENTS
                nodes = {agent["node"] for agent in listing["agents"]}
                assert len(nodes) == 2, nodes  # the kernel spread them over both workers
                for index in range(AGENTS):  # through whichever worker answers the call
                    response = await http.post(
                        f"/api/websocket/agents/w-{index}/command", json={"command": "ping"}
                    )
                    assert response.status_code == 200, response.text
            nursery.cancel_scope.cancel()
    finally:
        workers.terminate()
        workers.wait(timeout=30)
    log = (tmp_path / "workers.log").read_text()
    assert "2 workers on 127.0.0.1:" in log
    assert (tmp_path / "state" / "state-w0.sqlite3").exists()
    assert (tmp_path / "state" / "state-w1.sqlite3").exists()


async def _agent(
    url: str, agent_id: str, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
) -> None:
    async with open_agent(url, agent_id) as agent:
        task_status.started()
        await agent.serve_commands()


def test_workers_without_redis_say_so(tmp_path: Path) -> None:
    result = run_cli(
        "serve",
        "--workers",
        "2",
        "--listen",
        "127.0.0.1:0",
        cwd=tmp_path,
        env=isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET),
    )
    assert result.returncode != 0
    assert "--workers 2 needs Redis" in result.stderr
