"""Tunnels and shells end to end (docs/sessions.md); one JSON line each.

    .venv/bin/python bench/bench_tunnel.py [--mib 200] [--idle 1000] [--keys 500]

A real ``monitoring-ws serve`` (pinned to CPU 0), a real ``monitoring-ws agent`` with a
tunnel allowed and shells on, ``--idle`` more agents in one process (bench/agent_fleet.py)
that stay connected, and the operator's side as operators run it:

- ``tunnel_bulk``: ``ctl forward`` to a TCP source and a sink behind the agent; MB/s down
  (the source sends ``--mib`` MiB) and up (the sink counts them), beside the same copies
  straight over loopback; meanwhile idle agents are pinged (p50/p99 ms, failures) and
  counted connected after;
- ``shell_echo``: a keystroke sent through the API's WebSocket to a shell on the agent
  until its echo comes back, ``--keys`` times (p50/p99 ms), beside a local pseudo-terminal.

Loopback only.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import pty
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import httpx
import trio
from trio_websocket import open_websocket_url

from fleet import SECRET, emit, start_server, summary

CHUNK = 1 << 16
CTL = (sys.executable, "-m", "monitoring_ws", "ctl")
KEYS = b"abcdefghij"


async def source(mib: int, stream: trio.SocketStream) -> None:
    block = bytes(CHUNK)
    async with stream:
        for _ in range((mib << 20) // CHUNK):
            await stream.send_all(block)


async def sink(stream: trio.SocketStream) -> None:
    received = 0
    async with stream:
        async for data in stream:
            received += len(data)
        await stream.send_all(str(received).encode())


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


async def serve(handler: Any, port: int, nursery: trio.Nursery) -> None:
    await nursery.start(functools.partial(trio.serve_tcp, handler, port, host="127.0.0.1"))


async def download(port: int) -> tuple[int, float]:
    started = time.perf_counter()
    received = 0
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        async for data in stream:
            received += len(data)
    return received, time.perf_counter() - started


async def upload(port: int, mib: int) -> tuple[int, float]:
    started = time.perf_counter()
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    block = bytes(CHUNK)
    async with stream:
        for _ in range((mib << 20) // CHUNK):
            await stream.send_all(block)
        await stream.send_eof()
        answer = b""
        async for data in stream:
            answer += data
    return int(answer or 0), time.perf_counter() - started


async def forward(api: str, spec: str) -> tuple[trio.Process, int]:
    process = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "monitoring_ws",
            "ctl",
            "--url",
            api,
            "forward",
            "bench-tunnel",
            spec,
        ],
        stderr=subprocess.PIPE,
    )
    assert process.stderr is not None
    said = b""
    while b"(Ctrl-C stops)" not in said:
        said += await process.stderr.receive_some(4096)
    return process, int(said.split(b" -> ")[0].rsplit(b":", 1)[1])


async def pings(
    api: str, idle: int, done: trio.Event, found: dict[str, Any], prefix: str = "ping"
) -> None:
    latencies: list[float] = []
    failures = 0
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        index = 0
        while not done.is_set():
            agent = f"idle-{index % idle:05d}"
            index += 97
            started = time.perf_counter()
            answer = await http.post(f"/api/agents/{agent}/commands", json={"command": "ping"})
            if answer.status_code == 200:
                latencies.append(time.perf_counter() - started)
            else:
                failures += 1
            await trio.sleep(0.05)
    found[f"{prefix}s"] = len(latencies)
    found[f"{prefix}_failures"] = failures
    found.update({f"{prefix}_{k}": v for k, v in (summary(latencies) if latencies else {}).items()})


async def bulk(api: str, mib: int, idle: int, ports: tuple[int, int]) -> dict[str, Any]:
    source_port, sink_port = ports
    async with trio.open_nursery() as nursery:
        await serve(functools.partial(source, mib), source_port, nursery)
        await serve(sink, sink_port, nursery)
        direct_down = await download(source_port)
        direct_up = await upload(sink_port, mib)
        down_forward, down_port = await forward(api, f"0:127.0.0.1:{source_port}")
        up_forward, up_port = await forward(api, f"0:127.0.0.1:{sink_port}")
        done, during = trio.Event(), {}
        quiet = trio.Event()  # first the same pings with nothing else going on
        async with trio.open_nursery() as alone:
            alone.start_soon(pings, api, idle, quiet, during, "quiet_ping")
            await trio.sleep(8)
            quiet.set()
        nursery.start_soon(pings, api, idle, done, during)
        tunnel_down = await download(down_port)
        tunnel_up = await upload(up_port, mib)
        done.set()
        await trio.sleep(0.2)
        for process in (down_forward, up_forward):
            process.kill()
        async with httpx.AsyncClient(base_url=api, timeout=30) as http:
            agents = (await http.get("/api/agents", params={"limit": 5000})).json()["agents"]
        nursery.cancel_scope.cancel()
    mb = lambda done: round(done[0] / 1e6 / done[1], 1)  # noqa: E731
    return {
        "bench": "tunnel_bulk",
        "mib": mib,
        "down_mb_per_s": mb(tunnel_down),
        "up_mb_per_s": mb(tunnel_up),
        "direct_down_mb_per_s": mb(direct_down),
        "direct_up_mb_per_s": mb(direct_up),
        "complete": tunnel_down[0] == tunnel_up[0] == mib << 20,
        "idle_agents": idle,
        "connected_after": sum(1 for a in agents if a.get("connected")),
        **during,
    }


async def echo_through(ws: Any, key: bytes) -> float:
    started = time.perf_counter()
    await ws.send_message(key)
    seen = b""
    while key not in seen:
        message = await ws.get_message()
        if isinstance(message, bytes):
            seen += message
    return time.perf_counter() - started


async def shell_echo(api: str, keys: int) -> dict[str, Any]:
    url = api.replace("http://", "ws://") + "/api/agents/bench-tunnel/channel?kind=shell"
    remote: list[float] = []
    async with open_websocket_url(url) as ws:
        while json.loads(await ws.get_message()).get("type") != "opened":
            pass
        await trio.sleep(0.5)  # the prompt
        remote.extend([await echo_through(ws, KEYS[i % 10 : i % 10 + 1]) for i in range(keys)])
    master, terminal = pty.openpty()
    local: list[float] = []
    shell = subprocess.Popen(["/bin/sh"], stdin=terminal, stdout=terminal, stderr=terminal)
    os.close(terminal)
    try:
        time.sleep(0.3)
        os.read(master, 4096)
        for index in range(keys):
            key = b"abcdefghij"[index % 10 : index % 10 + 1]
            started = time.perf_counter()
            os.write(master, key)
            while key not in os.read(master, 4096):
                pass
            local.append(time.perf_counter() - started)
    finally:
        shell.kill()
        os.close(master)
    return {
        "bench": "shell_echo",
        "keys": keys,
        **summary(remote),
        **{f"local_pty_{k}": v for k, v in summary(local).items()},
    }


def start_agent(agent_url: str, state: Path, ports: tuple[int, int]) -> subprocess.Popen[bytes]:
    config = state / "agent.json"
    config.write_text(
        json.dumps(
            {
                "wsApiUrl": agent_url,
                "wsSecret": SECRET,
                "agentId": "bench-tunnel",
                "stateDir": str(state / "agent-state"),
                "sessions": {"shell": True, "program": "/bin/sh"},
                "tunnels": {"allow": [f"127.0.0.1:{port}" for port in ports]},
            }
        ),
        encoding="utf-8",
    )
    return subprocess.Popen(  # noqa: S603 - our own command line
        [sys.executable, "-m", "monitoring_ws", "agent", "--config", str(config)],
        stderr=subprocess.DEVNULL,
        preexec_fn=lambda: os.sched_setaffinity(0, {1}),  # noqa: PLW1509
    )


async def connected(api: str, count: int) -> None:
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        with trio.fail_after(300):
            while True:
                agents = (await http.get("/api/agents", params={"limit": 5000})).json()["agents"]
                if sum(1 for agent in agents if agent.get("connected")) >= count:
                    return
                await trio.sleep(0.5)


async def bench(api: str, args: argparse.Namespace, ports: tuple[int, int]) -> None:
    await connected(api, args.idle + 1)
    emit(await bulk(api, args.mib, args.idle, ports))
    emit(await shell_echo(api, args.keys))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--mib", type=int, default=200)
    parser.add_argument("--idle", type=int, default=1000)
    parser.add_argument("--keys", type=int, default=500)
    args = parser.parse_args()
    state = Path(tempfile.mkdtemp(prefix="bench-tunnel-"))
    ports = (free_port(), free_port())
    server, api, agent_url = start_server()
    processes: list[subprocess.Popen[Any]] = [server]
    try:
        fleet = subprocess.Popen(  # noqa: S603 - our own command line
            [
                sys.executable,
                str(Path(__file__).parent / "agent_fleet.py"),
                "--url",
                agent_url,
                "--prefix",
                "idle",
                "--count",
                str(args.idle),
            ],
            env={**os.environ, "MONITORING_WS_SECRET": SECRET},
            preexec_fn=lambda: os.sched_setaffinity(0, {1}),  # noqa: PLW1509
        )
        processes.append(fleet)
        processes.append(start_agent(agent_url, state, ports))
        trio.run(bench, api, args, ports)
    finally:
        for process in reversed(processes):
            process.terminate()
            process.wait()


if __name__ == "__main__":
    main()
