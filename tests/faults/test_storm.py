"""Reconnect storm: 1,000 real agents in four processes, the server restarted under them.

All come back, with no authentication failure, and the restarted server's memory stays
bounded. How fast is measured, not asserted: bench/bench_storm.py runs the same with
5,000 and docs/performance.md quotes it (the deadlines here only catch a hang).
"""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import trio

from ..gateway.agents import SECRET
from ..support import processes
from ..support.eventually import eventually
from ..support.processes import isolated_env

FLEETS, PER_FLEET = 4, 250
AGENTS = FLEETS * PER_FLEET
FLEET_SCRIPT = Path(__file__).parents[2] / "bench" / "agent_fleet.py"


async def _stats(http: httpx.AsyncClient) -> dict[str, Any] | None:
    try:
        response = await http.get("/api/websocket/stats")
    except httpx.TransportError:
        return None  # restarting
    stats: dict[str, Any] = response.json()
    return stats


async def _all_connected(http: httpx.AsyncClient, timeout: float) -> dict[str, Any]:
    async def all_in() -> dict[str, Any] | None:
        # Every agent authenticated, not only its socket open (the count is read between
        # an upgrade and its auth otherwise).
        stats = await _stats(http)
        if stats is None or stats["openConnections"] < AGENTS:
            return None
        return stats if stats["counters"].get("authenticated", 0) >= AGENTS else None

    return await eventually(all_in, timeout_s=timeout, what=f"{AGENTS} agents authenticated")


async def test_a_thousand_agents_all_come_back_after_a_restart(tmp_path: Path) -> None:
    port = processes.free_port()
    server = processes.server(tmp_path, port)
    await trio.to_thread.run_sync(server.start)
    fleets: list[subprocess.Popen[bytes]] = []
    try:
        for index in range(FLEETS):
            command = [sys.executable, str(FLEET_SCRIPT), "--url", f"ws://127.0.0.1:{port}/agent"]
            command += ["--prefix", f"storm{index}", "--count", str(PER_FLEET)]
            log = (tmp_path / f"fleet{index}.log").open("wb")
            fleets.append(
                subprocess.Popen(
                    command,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=isolated_env(MONITORING_WS_SECRET=SECRET),
                )
            )
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            await _all_connected(http, 240)
            before_rss = psutil.Process(server.pid).memory_info().rss
            # A normal restart: SIGTERM (agents get 1001 and a retry hint), start again.
            await trio.to_thread.run_sync(server.stop)
            restarted_at = time.monotonic()
            await trio.to_thread.run_sync(server.start)
            stats = await _all_connected(http, 240)
            back_after = time.monotonic() - restarted_at
            process = psutil.Process(server.pid)
            after_rss, cpu = process.memory_info().rss, process.cpu_times()
    finally:
        for fleet in fleets:
            fleet.terminate()
        for fleet in fleets:
            fleet.wait(timeout=30)
        await trio.to_thread.run_sync(server.stop)
    counters = stats["counters"]
    print(
        f"back after {back_after:.1f} s; RSS {before_rss >> 20} MiB before, "
        f"{after_rss >> 20} MiB after; CPU {cpu.user + cpu.system:.1f} s; {counters}"
    )
    assert counters.get("closed_4401", 0) == 0  # no authentication failure
    assert counters["authenticated"] == counters["connections"] >= AGENTS
    # Bounded: the new process holds what the old one did, give or take (no leak per
    # refused or retried connection).
    assert after_rss < before_rss * 1.5 + (32 << 20)
