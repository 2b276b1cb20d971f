"""Cluster figures: one process against ``--workers 2`` on Redis, and cross-node commands
against same-node ones; one JSON line per scenario.

    .venv/bin/python bench/bench_cluster.py [ingest] [commands] [cross]

Starts its own redis-server (ephemeral loopback port, no persistence). The load generator
shares this 2-core machine with the workers (nothing is pinned here), so the per-worker
efficiency is what to read, not the absolute total. Loopback only.
"""

from __future__ import annotations

import argparse
import os
import platform
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from typing import Any

import trio

from bench_gateway import commands, host_port, ingest
from fleet import BenchAgent, HttpCaller, emit, now_ms, start_server, summary

MACHINE = f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def start_redis() -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    executable = shutil.which("redis-server")
    if executable is None:
        raise SystemExit("redis-server is needed: apt-get install redis-server")
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [
            executable,
            "--port",
            str(port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
        ],
        stdout=subprocess.DEVNULL,
        cwd=tempfile.mkdtemp(prefix="bench-redis-"),
    )
    time.sleep(0.5)
    return process, f"redis://127.0.0.1:{port}"


def servers(workers: int, redis_url: str | None) -> tuple[subprocess.Popen[str], str, str]:
    if workers == 1:
        return start_server(cpu=None)
    listen = f"127.0.0.1:{free_port()}"
    args = ("--workers", str(workers), "--redis-url", redis_url or "")
    process, api, ws = start_server(*args, cpu=None, listen=listen)
    time.sleep(2)  # the other workers' start-up
    return process, api, ws


def stop(process: subprocess.Popen[str]) -> None:
    process.send_signal(signal.SIGTERM)
    process.wait(timeout=60)


async def cross(
    api_near: str, api_far: str, ws_near: str, agents: int, seconds: float
) -> dict[str, Any]:
    """Agents on the near node; one caller asks the near node, then the far one."""
    host, port = host_port(ws_near)
    fleet = [BenchAgent(host, port, f"x-{i}") for i in range(agents)]
    for agent in fleet:
        await agent.connect()
    body = b'{"command": "ping", "args": {}}'
    results: dict[str, Any] = {}
    async with trio.open_nursery() as nursery:
        for agent in fleet:
            nursery.start_soon(agent.answer_commands)
        for name, api in (("same_node", api_near), ("cross_node", api_far)):
            api_host, api_port = host_port(api)
            http = HttpCaller(api_host, api_port)
            latencies: list[float] = []
            deadline = time.perf_counter() + seconds
            n = 0
            while time.perf_counter() < deadline:
                start = time.perf_counter()
                status, _ = await http.post(f"/api/websocket/agents/x-{n % agents}/command", body)
                n += 1
                if status == 200:
                    latencies.append(time.perf_counter() - start)
            results[name] = summary(latencies) | {"requests": len(latencies)}
        nursery.cancel_scope.cancel()
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("scenarios", nargs="*", default=["ingest", "commands", "cross"])
    options = parser.parse_args()
    redis, redis_url = start_redis()
    try:
        if "ingest" in options.scenarios:
            for workers in (1, 2):
                process, _, ws = servers(workers, redis_url)
                try:
                    result = trio.run(ingest, ws, 100, 1500, False)
                finally:
                    stop(process)
                emit({"bench": "cluster_ingest", "workers": workers, **result, "machine": MACHINE})
        if "commands" in options.scenarios:
            for workers in (1, 2):
                process, api, ws = servers(workers, redis_url)
                try:
                    result = trio.run(commands, api, ws, 1000, 32, 5.0)
                finally:
                    stop(process)
                emit(
                    {"bench": "cluster_commands", "workers": workers, **result, "machine": MACHINE}
                )
        if "cross" in options.scenarios:
            near, api_near, ws_near = start_server("--redis-url", redis_url, cpu=None)
            far, api_far, _ = start_server("--redis-url", redis_url, cpu=None)
            try:
                result = trio.run(cross, api_near, api_far, ws_near, 100, 5.0)
            finally:
                stop(near)
                stop(far)
            emit({"bench": "cluster_cross_node", **result, "machine": MACHINE, "t": now_ms()})
    finally:
        redis.terminate()
        redis.wait(timeout=10)


if __name__ == "__main__":
    main()
