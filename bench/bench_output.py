"""Streamed output end to end: agent -> server -> ``monitoring-ws ctl run``; one JSON line each.

    .venv/bin/python bench/bench_output.py [--lines 1000] [--mib 100] [--budget-mib 256]

A real ``monitoring-ws serve`` (pinned to CPU 0, ``output_bytes_per_s`` set to
``--budget-mib``) and a real ``monitoring-ws agent`` (pinned to CPU 1), and ``ctl run`` as
an operator runs it, its stdout read here:

- ``line_latency``: a command prints ``--lines`` lines, each holding the wall clock when it
  was printed (every 5 ms); the delay until ctl printed it: p50, p99, max (ms);
- ``throughput``: a command prints ``--mib`` MiB (64-byte lines); MiB/s from the request to
  ctl's exit, whether every byte arrived, and the most memory (RSS) the server and the
  agent held meanwhile.

Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from fleet import SECRET, emit, rss_bytes, start_server

#: One line (the allow-list's ``re:.*`` matches no newline): a timestamp every 5 ms.
PRINTER = (
    "import sys, time; [(print(time.time_ns(), flush=True), time.sleep(0.005))"
    " for _ in range(int(sys.argv[1]))]"
)


def start_agent(agent_url: str, state: Path) -> subprocess.Popen[bytes]:
    config = state / "agent.json"
    config.write_text(
        json.dumps(
            {
                "wsApiUrl": agent_url,
                "wsSecret": SECRET,
                "agentId": "bench-output",
                "stateDir": str(state / "agent-state"),
                "allowedCommands": ["sh -c re:.*", f"{sys.executable} -c re:.* re:[0-9]+"],
            }
        ),
        encoding="utf-8",
    )
    process = subprocess.Popen(  # noqa: S603 - our own command line
        [sys.executable, "-m", "monitoring_ws", "agent", "--config", str(config)],
        stderr=subprocess.PIPE,
        preexec_fn=lambda: os.sched_setaffinity(0, {1}),  # noqa: PLW1509
    )
    assert process.stderr is not None
    for line in process.stderr:
        if b"connected to" in line:
            threading.Thread(target=process.stderr.read, daemon=True).start()
            return process
    raise RuntimeError(f"agent exited with {process.wait()}")


CTL = (sys.executable, "-m", "monitoring_ws", "ctl")


def ctl(api: str, *words: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(  # noqa: S603 - our own command line
        [*CTL, "--url", api, "run", "--timeout", "600", "bench-output", "--", *words],
        stdout=subprocess.PIPE,
    )


def line_latency(api: str, lines: int) -> dict[str, Any]:
    client = ctl(api, sys.executable, "-c", PRINTER, str(lines))
    assert client.stdout is not None
    # Each line's delay, taken as ctl's line is read here (printed, flushed, piped).
    delays = [(time.time_ns() - int(raw)) / 1e6 for raw in client.stdout]
    client.wait()
    delays.sort()
    return {
        "bench": "output_line_latency",
        "lines": len(delays),
        "p50_ms": round(statistics.median(delays), 2),
        "p99_ms": round(delays[int(len(delays) * 0.99) - 1], 2),
        "max_ms": round(delays[-1], 2),
        "exit": client.returncode,
    }


def throughput(api: str, mib: int, watched: dict[str, int]) -> dict[str, Any]:
    peaks = dict.fromkeys(watched, 0)
    done = threading.Event()

    def watch() -> None:
        while not done.is_set():
            for name, pid in watched.items():
                peaks[name] = max(peaks[name], rss_bytes(pid))
            time.sleep(0.1)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    script = (
        f"yes 0123456789012345678901234567890123456789012345678901234567890 | head -c {mib << 20}"
    )
    started = time.perf_counter()
    client = ctl(api, "sh", "-c", script)
    assert client.stdout is not None
    received = 0
    while chunk := client.stdout.read1(1 << 20):
        received += len(chunk)
    client.wait()
    seconds = time.perf_counter() - started
    done.set()
    watcher.join()
    return {
        "bench": "output_throughput",
        "mib": mib,
        "seconds": round(seconds, 2),
        "mib_per_s": round(received / (1 << 20) / seconds, 2),
        "complete": received == mib << 20,
        "exit": client.returncode,
        **{f"{name}_peak_rss_mib": round(peak / (1 << 20), 1) for name, peak in peaks.items()},
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--lines", type=int, default=1000)
    parser.add_argument("--mib", type=int, default=100)
    parser.add_argument("--budget-mib", type=int, default=256, help="output_bytes_per_s, MiB")
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-output-"))
    config = state / "monitoring.toml"
    config.write_text(
        f"[plugins.websocket]\noutput_bytes_per_s = {args.budget_mib << 20}\n", encoding="utf-8"
    )
    server, api, agent_url = start_server("--config", str(config))
    agent = None
    try:
        agent = start_agent(agent_url, state)
        emit(line_latency(api, args.lines))
        emit(throughput(api, args.mib, {"server": server.pid, "agent": agent.pid}))
    finally:
        for process in (agent, server):
            if process is not None:
                process.terminate()
                process.wait()


if __name__ == "__main__":
    main()
