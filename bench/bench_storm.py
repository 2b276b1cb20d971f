"""Reconnect storm: real agents in several processes, the server restarted; one JSON line.

    .venv/bin/python bench/bench_storm.py [--agents 5000] [--fleets 5] [--mode term|kill]

``term`` restarts the way an operator does (SIGTERM: agents get 1001 and a retry hint);
``kill`` is ``kill -9`` (agents see 1006 and back off). The server runs pinned to CPU 0,
the agent processes share CPU 1. Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

from fleet import SECRET, cpu_seconds, emit, rss_bytes, start_server

FLEET = Path(__file__).with_name("agent_fleet.py")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def stats(port: int) -> dict[str, Any] | None:
    try:
        url = f"http://127.0.0.1:{port}/api/websocket/stats"
        with urllib.request.urlopen(url, timeout=5) as response:
            result: dict[str, Any] = json.load(response)
            return result
    except OSError:
        return None


def wait_connected(port: int, agents: int, timeout: float, pid: int) -> tuple[float, int]:
    """Seconds until ``agents`` are connected, and the server's peak RSS meanwhile."""
    started, peak = time.monotonic(), 0
    while time.monotonic() - started < timeout:
        peak = max(peak, rss_bytes(pid))
        current = stats(port)
        if current is not None and current["openConnections"] >= agents:
            return time.monotonic() - started, peak
        time.sleep(0.2)
    raise SystemExit(f"not all {agents} agents came back within {timeout} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--fleets", type=int, default=5)
    parser.add_argument("--mode", choices=("term", "kill"), default="term")
    parser.add_argument(
        "--listener",
        choices=("combined", "lean"),
        default="combined",
        help="agents on the API's port (Hypercorn) or on agent_listen (the lean listener)",
    )
    options = parser.parse_args()
    port = agent_port = free_port()
    state = tempfile.mkdtemp(prefix="storm-")
    server_args: tuple[str, ...] = ("--state-dir", state)
    if options.listener == "lean":
        agent_port = free_port()
        server_args += ("--agent-listen", f"127.0.0.1:{agent_port}")
    server, _, _ = start_server(*server_args, listen=f"127.0.0.1:{port}")
    per_fleet = options.agents // options.fleets
    environ = dict(os.environ, MONITORING_WS_SECRET=SECRET)
    fleets = [
        subprocess.Popen(  # noqa: S603 - our own command line
            [
                *(sys.executable, str(FLEET), "--url", f"ws://127.0.0.1:{agent_port}/agent"),
                *("--prefix", f"f{index}", "--count", str(per_fleet)),
            ],
            env=environ,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            preexec_fn=lambda: os.sched_setaffinity(0, {1}),  # noqa: PLW1509
        )
        for index in range(options.fleets)
    ]
    total = per_fleet * options.fleets
    try:
        first_connect_s, _ = wait_connected(port, total, 120, server.pid)
        time.sleep(2)
        rss_before = rss_bytes(server.pid)
        dropped_at = time.monotonic()
        server.send_signal(signal.SIGTERM if options.mode == "term" else signal.SIGKILL)
        server.wait(timeout=60)
        stopped_s = time.monotonic() - dropped_at
        server, _, _ = start_server(*server_args, listen=f"127.0.0.1:{port}")
        startup_s = time.monotonic() - dropped_at
        cpu_start = cpu_seconds(server.pid)
        back_s, peak_rss = wait_connected(port, total, 120, server.pid)
        cpu_s = cpu_seconds(server.pid) - cpu_start
        final = stats(port) or {}
    finally:
        for fleet in fleets:
            fleet.terminate()
        for fleet in fleets:
            fleet.wait(timeout=60)
        server.terminate()
        server.wait(timeout=60)
    counters = final.get("counters", {})
    emit(
        {
            "bench": "storm",
            "mode": options.mode,
            "listener": options.listener,
            "agents": total,
            "fleets": options.fleets,
            "first_connect_s": round(first_connect_s, 1),
            "server_stop_s": round(stopped_s, 1),
            "server_up_again_s": round(startup_s, 1),
            "all_back_after_restart_s": round(startup_s + back_s, 1),
            "auth_failures": counters.get("closed_4401", 0),
            "refused_4429": counters.get("refused_4429", 0),
            "reconnect_cpu_s": round(cpu_s, 1),
            "rss_before_mib": rss_before >> 20,
            "rss_peak_after_mib": peak_rss >> 20,
            "machine": f"{platform.machine()} {os.cpu_count()} cpu",
        }
    )


if __name__ == "__main__":
    main()
