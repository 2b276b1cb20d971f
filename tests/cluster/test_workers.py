"""``serve --workers N``: real worker processes sharing one port through Redis."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import httpx
import psutil
import trio

from monitoring_ws.agent.main import build_agent

from ..agent.test_agent import settings_for
from ..conftest import SECRET
from ..support import processes
from ..support.eventually import eventually
from ..support.processes import isolated_env, run_cli
from .helpers import serving_agent

AGENTS = 20


def _start_workers(
    tmp_path: Path, port: int, redis_url: str, *, from_file: bool = False
) -> subprocess.Popen[bytes]:
    """``serve --workers 2`` from flags, or (``from_file``) from monitoring.toml's tables."""
    log = (tmp_path / "workers.log").open("wb")
    command = [sys.executable, "-m", "monitoring_ws", "serve"]
    env = isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET)
    if from_file:
        config = tmp_path / "monitoring.toml"
        config.write_text(
            f'[server]\nlisten = "127.0.0.1:{port}"\nstate_dir = "{tmp_path / "state"}"\n'
            "[cluster]\nworkers = 2\n"
        )
        command += ["--config", str(config)]
        env["MONITORING_WS_REDIS_URL"] = redis_url
    else:
        command += ["--workers", "2", "--listen", f"127.0.0.1:{port}", "--redis-url", redis_url]
        command += ["--state-dir", str(tmp_path / "state")]
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=tmp_path)
    deadline = time.monotonic() + 30
    try:
        while (tmp_path / "workers.log").read_text().count("API on http://") < 2:
            assert process.poll() is None, (tmp_path / "workers.log").read_text()
            assert time.monotonic() < deadline, "the workers did not start"
            time.sleep(0.1)
    except BaseException:
        process.terminate()  # the supervisor stops its workers, then itself
        process.wait(timeout=30)
        raise
    return process


async def test_two_workers_share_the_port_and_every_agent(tmp_path: Path, redis_url: str) -> None:
    port = processes.free_port()
    workers = await trio.to_thread.run_sync(_start_workers, tmp_path, port, redis_url)
    try:
        async with trio.open_nursery() as nursery:
            agents = []
            for index in range(AGENTS):
                agent = await nursery.start(
                    serving_agent, f"ws://127.0.0.1:{port}/agent", f"w-{index}"
                )
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
    assert "workers = 2 needs Redis" in result.stderr


async def test_a_killed_workers_agents_come_back_and_commands_follow(
    tmp_path: Path, redis_url: str
) -> None:
    port = processes.free_port()
    workers = await trio.to_thread.run_sync(
        partial(_start_workers, tmp_path, port, redis_url, from_file=True)
    )
    url = f"ws://127.0.0.1:{port}/agent"
    try:
        async with (
            trio.open_nursery() as nursery,
            httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http,
        ):
            fleet = [
                build_agent(settings_for(url, f"k-{i}", backoff_base_s=0.2, backoff_cap_s=1))
                for i in range(AGENTS)
            ]
            for agent in fleet:
                nursery.start_soon(agent.run)

            async def _done() -> bool:
                return (await http.get("/api/websocket/agents")).json()["count"] >= AGENTS

            await eventually(_done, timeout_s=20)
            listing = (await http.get("/api/websocket/agents")).json()["agents"]
            victim = next(a["node"] for a in listing)  # a worker holding at least one agent
            pid = _worker_pid(tmp_path, int(victim.rsplit(":w", 1)[1]))
            os.kill(pid, signal.SIGKILL)
            # Its agents reconnect (to the other worker, or the restarted one) and every
            # command through the shared port reaches its agent again.
            for index in range(AGENTS):
                path = f"/api/websocket/agents/k-{index}/command"
                await eventually(partial(_ok, http, path), timeout_s=30, what=f"k-{index} back")
            nursery.cancel_scope.cancel()
    finally:
        workers.terminate()
        workers.wait(timeout=30)
    assert "exited with -9; starting it again" in (tmp_path / "workers.log").read_text()


async def _ok(http: httpx.AsyncClient, path: str) -> bool:
    try:
        return (await http.post(path, json={"command": "ping"})).status_code == 200
    except httpx.TransportError:  # a kept-alive connection to the killed worker
        return False


def _worker_pid(tmp_path: Path, index: int) -> int:
    match = re.search(r"workers on \S+: pids \[([\d, ]+)\]", (tmp_path / "workers.log").read_text())
    assert match is not None
    return int(match.group(1).split(",")[index])


async def test_workers_stop_when_their_supervisor_is_killed(tmp_path: Path, redis_url: str) -> None:
    port = processes.free_port()
    supervisor = await trio.to_thread.run_sync(_start_workers, tmp_path, port, redis_url)
    pids = [_worker_pid(tmp_path, index) for index in range(2)]
    supervisor.kill()  # no SIGTERM to pass on: the kernel tells the workers (PDEATHSIG)
    supervisor.wait(timeout=10)
    await eventually(lambda: not any(_running(pid) for pid in pids), timeout_s=20)


def _running(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
