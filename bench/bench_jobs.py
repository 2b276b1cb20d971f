"""A fleet job against the per-agent route, same server, same agents; one JSON line each.

    .venv/bin/python bench/bench_jobs.py [--agents 5000] [--callers 32] [--runs 1]

A real ``monitoring-ws serve`` (pinned to CPU 0) holds ``--agents`` connected agents (the
project's protocol-level fleet, bench/fleet.py, in this process on CPU 1). Then, in turn:

- ``job``: one ``POST /api/jobs`` pinging every agent, no concurrency limit: seconds from
  the request to the job's end (its last result), and the server's CPU seconds;
- ``per_agent``: every agent pinged once through ``POST /api/agents/:id/commands`` by
  ``--callers`` keep-alive HTTP callers: the same two figures;
- ``job_10pct``: the ping job with ``maxConcurrency: "10%"``: its seconds, the most
  commands seen running at once (from the agents' records) against the limit.

Loopback only.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from typing import Any

import trio

from bench_gateway import connect_all, host_port
from fleet import BenchAgent, HttpCaller, cpu_seconds, emit, raise_open_file_limit, start_server

PING = b'{"command": "ping", "args": {}}'


async def get(http: HttpCaller, path: str) -> dict[str, Any]:
    """A GET over the caller's keep-alive connection, its JSON."""
    status, body = await http.request("GET", path)
    assert status == 200, body
    found: dict[str, Any] = json.loads(body)
    return found


async def job(api: tuple[str, int], pid: int, concurrency: str) -> dict[str, Any]:
    http = HttpCaller(*api)
    await http.connect()
    body = {
        "selector": {"glob": "job-*"},
        "command": "ping",
        "maxConcurrency": concurrency,
        "maxErrors": "100%",
    }
    cpu, start = cpu_seconds(pid), time.perf_counter()
    status, answer = await http.post("/api/jobs", json.dumps(body).encode())
    assert status == 202, answer
    job_id = json.loads(answer)["jobId"]
    while True:  # the job's state, read cheaply (one agent per page) every 20 ms
        state = await get(http, f"/api/jobs/{job_id}?limit=1")
        if state["state"] not in {"pending", "running"}:
            break
        await trio.sleep(0.02)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    result = {
        "seconds": round(elapsed, 3),
        "server_cpu_s": round(cpu, 3),
        "state": state["state"],
        "succeeded": state["counts"]["succeeded"],
    }
    if concurrency != "100%":
        spans = []
        offset = 0
        while offset is not None:
            page = await get(http, f"/api/jobs/{job_id}?limit=1000&offset={offset}")
            spans += [(t["startedAt"], t["endedAt"]) for t in page["agents"]]
            offset = page["nextOffset"]
        edges = sorted([(s, 1) for s, _ in spans] + [(e, -1) for _, e in spans])
        running = most = 0
        for _, step in edges:
            running += step
            most = max(most, running)
        result |= {"max_concurrency": concurrency, "most_at_once": most}
    if http.stream is not None:
        await http.stream.aclose()
    return result


async def per_agent(api: tuple[str, int], pid: int, agents: int, callers: int) -> dict[str, Any]:
    todo = iter(range(agents))
    failures = 0

    async def caller() -> None:
        nonlocal failures
        http = HttpCaller(*api)
        await http.connect()
        for index in todo:
            status, _ = await http.post(f"/api/agents/job-{index}/commands", PING)
            failures += status != 200

    cpu, start = cpu_seconds(pid), time.perf_counter()
    async with trio.open_nursery() as nursery:
        for _ in range(callers):
            nursery.start_soon(caller)
    elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    return {
        "seconds": round(elapsed, 3),
        "server_cpu_s": round(cpu, 3),
        "failures": failures,
        "callers": callers,
    }


async def bench(api_url: str, ws_url: str, pid: int, agents: int, callers: int) -> None:
    host, port = host_port(ws_url)
    fleet = [BenchAgent(host, port, f"job-{i}") for i in range(agents)]
    await connect_all(fleet)
    api = host_port(api_url)
    async with trio.open_nursery() as answering:
        for agent in fleet:
            answering.start_soon(agent.answer_commands)
        await per_agent(api, pid, min(agents, 500), callers)  # warm up both paths
        await job(api, pid, "100%")
        measured = {
            "job": await job(api, pid, "100%"),
            "per_agent": await per_agent(api, pid, agents, callers),
            "job_10pct": await job(api, pid, "10%"),
        }
        answering.cancel_scope.cancel()
    jobbed, single = measured["job"], measured["per_agent"]
    emit(
        {
            "bench": "jobs",
            "agents": agents,
            **measured,
            "time_ratio": round(jobbed["seconds"] / single["seconds"], 3),
            "cpu_ratio": round(jobbed["server_cpu_s"] / single["server_cpu_s"], 3),
        }
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--agents", type=int, default=5000)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--runs", type=int, default=1)
    options = parser.parse_args()
    raise_open_file_limit()
    os.sched_setaffinity(0, {1})
    for _ in range(options.runs):
        process, api_url, ws_url = start_server()
        try:
            trio.run(bench, api_url, ws_url, process.pid, options.agents, options.callers)
        finally:
            process.terminate()
            process.wait(timeout=30)


if __name__ == "__main__":
    main()
