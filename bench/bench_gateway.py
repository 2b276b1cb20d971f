"""Gateway benchmarks against a real ``monitoring-ws serve`` process; one JSON line each.

    .venv/bin/python bench/bench_gateway.py ingest   [--agents 100] [--frames 1500] [--ack]
    .venv/bin/python bench/bench_gateway.py commands [--agents 1000] [--callers 1 32] [--route seed]
    .venv/bin/python bench/bench_gateway.py idle     [--agents 5000 10000]

The server runs pinned to CPU 0, this load generator to CPU 1; loopback only.
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import random
import time
from functools import partial
from typing import Any

import trio

from fleet import (
    BenchAgent,
    HttpCaller,
    cpu_seconds,
    emit,
    listener_args,
    now_ms,
    raise_open_file_limit,
    rss_bytes,
    start_server,
    summary,
)
from monitoring_ws.protocol import FEATURE_ACK, HeartbeatAnswered

METRICS = {
    "cpu": {"percent": 12.5, "count": 2},
    "memory": {"percent": 41.3, "used": 1073741824},
    "load": [0.15, 0.1, 0.05],
}


def host_port(url: str) -> tuple[str, int]:
    host, port = url.split("//", 1)[1].split("/", 1)[0].rsplit(":", 1)
    return host, int(port)


async def connect_all(agents: list[BenchAgent], concurrency: int = 200) -> float:
    limiter = trio.CapacityLimiter(concurrency)
    start = time.perf_counter()

    async def one(agent: BenchAgent) -> None:
        async with limiter:
            await agent.connect()

    async with trio.open_nursery() as nursery:
        for agent in agents:
            nursery.start_soon(one, agent)
    return time.perf_counter() - start


async def ingest(ws_url: str, agents: int, frames: int, ack: bool) -> dict[str, Any]:
    """``ack``: the agents speak the ``ack`` extension and number every frame, as the
    project's agent does; the server then also acknowledges after each commit."""
    host, port = host_port(ws_url)
    features = (FEATURE_ACK,) if ack else ()
    fleet = [BenchAgent(host, port, f"ingest-{i}", features=features) for i in range(agents)]
    await connect_all(fleet)
    blobs = []
    for agent in fleet:  # sign and mask everything before the clock starts
        parts = [
            agent.encode(
                agent.session.metrics(
                    {**METRICS, "delivery": {"stream": "s-1", "seq": n + 1}} if ack else METRICS,
                    now_ms(),
                )
            )
            for n in range(frames)
        ]
        parts.append(agent.encode(agent.session.heartbeat(now_ms())))
        blobs.append(b"".join(parts))
    frame_bytes = len(fleet[0].session.metrics(METRICS, now_ms()))

    async def run(agent: BenchAgent, blob: bytes) -> None:
        await agent.send_raw(blob)
        while not any(isinstance(e, HeartbeatAnswered) for e in await agent.next_events()):
            pass

    start = time.perf_counter()
    async with trio.open_nursery() as nursery:
        for agent, blob in zip(fleet, blobs, strict=True):
            nursery.start_soon(run, agent, blob)
    elapsed = time.perf_counter() - start
    for agent in fleet:
        await agent.aclose()
    total = agents * (frames + 1)
    return {
        "agents": agents,
        "ack": ack,
        "messages": total,
        "frame_bytes": frame_bytes,
        "seconds": round(elapsed, 3),
        "msgs_per_s": round(total / elapsed),
    }


#: The command routes: the seed's (what most callers use) and the transport-neutral one.
ROUTES = {
    "seed": "/api/websocket/agents/{}/command",
    "neutral": "/api/agents/{}/commands",
}


async def commands(
    api_url: str,
    ws_url: str,
    agents: int,
    callers: int,
    seconds: float,
    *,
    pid: int,
    route: str = "seed",
) -> dict[str, Any]:
    host, port = host_port(ws_url)
    fleet = [BenchAgent(host, port, f"cmd-{i}") for i in range(agents)]
    await connect_all(fleet)
    # The fleet's objects live to the end: out of the generator's collections, whose pauses
    # would otherwise be timed as the server's latency.
    gc.collect()
    gc.freeze()
    api_host, api_port = host_port(api_url)
    body = b'{"command": "ping", "args": {}}'
    latencies: list[float] = []
    failures = 0
    rng = random.Random(7)

    async def caller(deadline: float, record: bool) -> None:
        nonlocal failures
        http = HttpCaller(api_host, api_port)
        await http.connect()
        while time.perf_counter() < deadline:
            path = ROUTES[route].format(f"cmd-{rng.randrange(agents)}")
            start = time.perf_counter()
            status, _ = await http.post(path, body)
            if status != 200:
                failures += 1
            elif record:
                latencies.append(time.perf_counter() - start)

    async with trio.open_nursery() as agents_nursery:
        for agent in fleet:
            agents_nursery.start_soon(agent.answer_commands)
        for record, duration in ((False, 1.0), (True, seconds)):  # warm up, then measure
            deadline = time.perf_counter() + duration
            start = time.perf_counter()
            server_cpu, own_cpu = cpu_seconds(pid), time.process_time()
            async with trio.open_nursery() as nursery:
                for _ in range(callers):
                    nursery.start_soon(caller, deadline, record)
            elapsed = time.perf_counter() - start
            server_cpu, own_cpu = cpu_seconds(pid) - server_cpu, time.process_time() - own_cpu
        agents_nursery.cancel_scope.cancel()
    return {
        "agents": agents,
        "callers": callers,
        "route": route,
        "requests": len(latencies),
        "failures": failures,
        "req_per_s": round(len(latencies) / elapsed),
        **summary(latencies),
        # Which side is the limit: each is pinned to one core (1.0 = that core is full).
        "server_busy": round(server_cpu / elapsed, 2),
        "generator_busy": round(own_cpu / elapsed, 2),
    }


async def auth(pid: int, ws_url: str, agents: int) -> dict[str, Any]:
    """Agents authenticated per second by a fresh server: ``agents`` connect, 200 at a
    time, each through the full handshake (TCP, upgrade, signed auth, the server's reply).
    The generator's one core can be the limit: the server's CPU time per agent says what
    the server itself spends."""
    host, port = host_port(ws_url)
    fleet = [BenchAgent(host, port, f"auth-{i}") for i in range(agents)]
    cpu = cpu_seconds(pid)
    elapsed = await connect_all(fleet)
    cpu = cpu_seconds(pid) - cpu
    for agent in fleet:
        await agent.aclose()
    return {
        "agents": agents,
        "seconds": round(elapsed, 3),
        "agents_per_s": round(agents / elapsed),
        "server_cpu_us_per_agent": round(cpu / agents * 1e6),
        "server_busy": round(cpu / elapsed, 2),
    }


async def idle(pid: int, ws_url: str, agents: int) -> dict[str, Any]:
    host, port = host_port(ws_url)
    warm = [BenchAgent(host, port, f"warm-{i}") for i in range(200)]
    await connect_all(warm)  # allocator and caches warmed before the baseline
    await trio.sleep(1)
    before = rss_bytes(pid)
    fleet = [BenchAgent(host, port, f"idle-{i}") for i in range(agents)]
    ramp = await connect_all(fleet)
    await trio.sleep(2)
    after = rss_bytes(pid)
    for agent in fleet + warm:
        await agent.aclose()
    return {
        "agents": agents,
        "connect_seconds": round(ramp, 2),
        "rss_before": before,
        "rss_after": after,
        "bytes_per_agent": round((after - before) / agents),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("scenario", choices=["ingest", "commands", "idle", "auth"])
    parser.add_argument("--agents", type=int, nargs="*")
    parser.add_argument("--frames", type=int, default=1500, help="ingest: frames per agent")
    parser.add_argument("--ack", action="store_true", help="ingest: numbered frames, acked")
    parser.add_argument("--callers", type=int, nargs="*", default=[1, 32])
    parser.add_argument("--seconds", type=float, default=5.0, help="commands: measured time")
    parser.add_argument("--route", choices=sorted(ROUTES), default="seed", help="commands: which")
    parser.add_argument(
        "--listener",
        choices=["combined", "lean", "hypercorn"],
        default="combined",
        help="agents on the API's port (Hypercorn), or on agent_listen served lean or by Hypercorn",
    )
    parser.add_argument(
        "--api",
        choices=["hypercorn", "lean"],
        help="what serves the API's port (api_server; default: the server's default)",
    )
    args = parser.parse_args()
    os.sched_setaffinity(0, {1})
    raise_open_file_limit()  # the generator holds a socket per agent too
    gc.freeze()
    machine = f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}"
    defaults = {"ingest": [100], "commands": [1000], "idle": [5000, 10000], "auth": [3000]}
    for count in args.agents or defaults[args.scenario]:
        runs = args.callers if args.scenario == "commands" else [None]
        for callers in runs:
            process, api_url, ws_url = start_server(*listener_args(args.listener, api=args.api))
            try:
                if args.scenario == "ingest":
                    result = trio.run(ingest, ws_url, count, args.frames, args.ack)
                elif args.scenario == "commands":
                    assert callers is not None
                    run = partial(commands, pid=process.pid, route=args.route)
                    result = trio.run(run, api_url, ws_url, count, callers, args.seconds)
                elif args.scenario == "auth":
                    result = trio.run(auth, process.pid, ws_url, count)
                else:
                    result = trio.run(idle, process.pid, ws_url, count)
            finally:
                process.terminate()
                process.wait(timeout=30)
            result["listener"], result["api"] = args.listener, args.api or "default"
            emit({"bench": f"gateway_{args.scenario}", **result, "machine": machine})


if __name__ == "__main__":
    main()
