"""Clock skew, heartbeats, log tails, and a server process killed under the agent."""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
import trio

from monitoring_ws.agent import client
from monitoring_ws.agent.logtail import TailedFile
from monitoring_ws.agent.main import ShippingHandler, build_agent
from monitoring_ws.protocol import MessageType
from tests.support.served import Served as Running

from ..conftest import StartServer
from ..gateway.agents import SECRET
from ..support.eventually import eventually
from ..support.observe import connected, counters
from ..support.processes import READY, free_port, isolated_env
from .test_agent import settings_for


async def test_a_skewed_clock_still_authenticates(
    server: Running, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = client.now_ms
    monkeypatch.setattr(client, "now_ms", lambda: real() + 3_600_000)  # an hour ahead
    agent = build_agent(settings_for(server.agent_urls[0], "skewed"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        with trio.fail_after(10):
            await agent.connected.wait()
        nursery.cancel_scope.cancel()


async def test_heartbeats_keep_the_agent_connected(start_server: StartServer) -> None:
    running = await start_server(heartbeat_interval_ms=150)
    agent = build_agent(settings_for(running.agent_urls[0], "beating"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        await trio.sleep(1.5)  # three times the silence allowance
        assert (await counters(running.api_url))["closed_4408"] == 0
        assert await connected(running.api_url, "beating")
        nursery.cancel_scope.cancel()


def test_tail_follows_rotation_and_truncation(tmp_path: Path) -> None:
    path = tmp_path / "app.log"
    path.write_text("before start\n")
    tail = TailedFile(path)
    assert tail.read_lines() == []  # starts at the end
    with path.open("a") as handle:
        handle.write("one\ntw")
    assert tail.read_lines() == ["one"]
    with path.open("a") as handle:
        handle.write("o\n")
    assert tail.read_lines() == ["two"]
    path.rename(tmp_path / "app.log.1")  # logrotate: move, then a new file
    assert tail.read_lines() == []
    path.write_text("fresh\n")
    assert tail.read_lines() == ["fresh"]
    path.write_text("")  # copytruncate
    with path.open("a") as handle:
        handle.write("after truncate\n")
    assert tail.read_lines() == ["after truncate"]


def test_the_agents_own_warnings_are_shipped() -> None:
    agent = build_agent(settings_for("ws://127.0.0.1:1/agent"))
    handler = ShippingHandler(agent)
    logger = logging.getLogger("monitoring_ws.test-shipping")
    logger.addHandler(handler)
    try:
        logger.warning("disk %s is full", "/var")
        logger.info("not shipped")
    finally:
        logger.removeHandler(handler)
    [(_, kind, payload)] = agent.outbox.after(0)
    assert kind is MessageType.LOG
    assert payload["entries"][0]["message"] == "disk /var is full"
    assert payload["entries"][0]["level"] == "warning"


def _start(port: int, cwd: Path) -> subprocess.Popen[str]:
    process = subprocess.Popen(
        [sys.executable, "-m", "monitoring_ws", "serve", "--listen", f"127.0.0.1:{port}"],
        stderr=subprocess.PIPE,
        text=True,
        cwd=cwd,
        env=isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET),
    )
    assert process.stderr is not None
    deadline = time.monotonic() + 30
    for line in process.stderr:
        if READY.search(line) or time.monotonic() > deadline:
            break
    return process


async def test_reconnects_after_the_server_process_is_killed(tmp_path: Path) -> None:
    port = free_port()
    url = f"ws://127.0.0.1:{port}/agent"
    server = await trio.to_thread.run_sync(_start, port, tmp_path)
    try:
        agent = build_agent(settings_for(url, "phoenix", backoff_base_s=0.2, backoff_cap_s=1))
        async with trio.open_nursery() as nursery:
            nursery.start_soon(agent.run)
            with trio.fail_after(10):
                await agent.connected.wait()
            os.kill(server.pid, signal.SIGKILL)  # no close frame: the agent sees 1006
            await trio.to_thread.run_sync(server.wait)
            server = await trio.to_thread.run_sync(_start, port, tmp_path)
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as http:

                async def back() -> bool:
                    status = (await http.get("/api/websocket/agents/phoenix")).json()
                    return bool(status["connected"])

                await eventually(back, timeout_s=15, what="phoenix connected again")
            nursery.cancel_scope.cancel()
    finally:
        server.kill()
        server.wait()
