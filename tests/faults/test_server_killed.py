"""A server process killed with -9 mid-stream and restarted on the same port: every metric
the agents produced arrives exactly once."""

from __future__ import annotations

import itertools
import threading
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.agent import client
from monitoring_ws.agent.client import Agent
from monitoring_ws.agent.main import build_agent

from ..agent.test_agent import settings_for
from ..support import processes
from ..support.eventually import eventually

AGENTS = 20


async def _spool(http: httpx.AsyncClient) -> list[dict[str, Any]]:
    items: list[dict[str, Any]] = []
    after = 0
    while True:
        page = await http.get("/api/websocket/telemetry", params={"after": after, "limit": 1000})
        page.raise_for_status()
        body = page.json()
        if not body["items"]:
            return items
        items += body["items"]
        after = body["next"]


async def _drained(agents: list[Agent], timeout: float) -> None:
    """Until every agent is connected and its outbox is empty (all acknowledged)."""
    await eventually(
        lambda: bool(all(agent.connected.is_set() and len(agent.outbox) == 0 for agent in agents)),
        timeout_s=timeout,
    )


async def test_kill_9_mid_stream_loses_and_repeats_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Each sample is numbered: what arrives must be exactly what was produced.
    numbers, lock, producing = itertools.count(), threading.Lock(), threading.Event()
    producing.set()

    def numbered_sample() -> dict[str, Any]:
        with lock:
            return {"n": next(numbers)} if producing.is_set() else {"idle": True}

    monkeypatch.setattr(client, "collect", numbered_sample)
    port = processes.free_port()
    server = processes.server(tmp_path, port)
    await trio.to_thread.run_sync(server.start)
    url = f"ws://127.0.0.1:{port}/agent"
    try:
        async with trio.open_nursery() as nursery:
            agents = []
            for index in range(AGENTS):
                settings = settings_for(
                    url,
                    f"streamer-{index:02d}",
                    metrics_interval_s=0.05,
                    backoff_base_s=0.2,
                    backoff_cap_s=1.0,
                    state_dir=tmp_path / "agents",  # the outboxes on disk
                )
                agents.append(agent := build_agent(settings))
                nursery.start_soon(agent.run)
            # Streaming: every agent connected (its outbox is never empty for long while it
            # produces every 50 ms, so "drained" here would time a loaded machine).
            await eventually(
                lambda: all(agent.connected.is_set() for agent in agents), timeout_s=60
            )
            await trio.sleep(1.5)  # streaming: about 600 samples
            await trio.to_thread.run_sync(server.kill)  # in flight: sent, maybe stored, no ack
            await trio.sleep(1.0)  # agents keep producing into their outboxes
            await trio.to_thread.run_sync(server.start)  # same port, same state directory
            await trio.sleep(1.0)
            producing.clear()
            await _drained(agents, 30)
            dropped = sum(agent.outbox.dropped for agent in agents)
            nursery.cancel_scope.cancel()
        produced = next(numbers)
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=30) as http:
            items = await _spool(http)
            stats = (await http.get("/api/websocket/stats")).json()
    finally:
        await trio.to_thread.run_sync(server.stop)
    received = [i["envelope"]["payload"]["n"] for i in items if "n" in i["envelope"]["payload"]]
    assert dropped == 0  # well within the outbox bounds
    assert produced > 500
    assert sorted(received) == list(range(produced))  # every one, exactly once
    # Re-sends after the kill happened and were recognised, not stored twice.
    print(f"produced {produced}; re-sends dropped after restart: {stats['deliveryDuplicates']}")
