"""The host's telemetry bus: every sample to every sink, a stuck sink stalls nothing, and
the telemetry_file plugin (plugins/) writes a real agent's metrics as JSON lines."""

from __future__ import annotations

import json
from collections.abc import Sequence
from functools import partial
from pathlib import Path

import httpx
import trio

from monitoring_ws.host.config import config_from_document
from monitoring_ws.host.server import Running, serve_host
from monitoring_ws.host.telemetry import LogBatch, MetricsSample, TelemetryBus, TelemetryItem
from monitoring_ws.protocol import LogEntry

from .conftest import SECRET
from .gateway.agents import now_ms, open_agent
from .support.eventually import eventually


class Recording:
    def __init__(self, name: str) -> None:
        self.name = name
        self.items: list[TelemetryItem] = []

    async def write(self, items: Sequence[TelemetryItem]) -> None:
        self.items.extend(items)


class Stuck:
    name = "stuck"

    def __init__(self) -> None:
        self.release = trio.Event()
        self.taken = 0

    async def write(self, items: Sequence[TelemetryItem]) -> None:
        self.taken += len(items)
        await self.release.wait()


class Failing:
    name = "failing"

    async def write(self, items: Sequence[TelemetryItem]) -> None:
        raise OSError("disk full")


async def test_a_stuck_or_failing_sink_slows_nothing_else(nursery: trio.Nursery) -> None:
    bus = TelemetryBus(queue_limit=10, batch=4)
    fast, stuck = Recording("fast"), Stuck()
    for sink in (fast, stuck, Failing()):
        bus.register(sink)
    await nursery.start(bus.run)
    for number in range(25):
        bus.metrics("agent-1", number, {"cpu": number})  # never waits
        await trio.sleep(0)
    bus.logs("agent-1", [LogEntry(1, "info", "hello", "syslog")])
    await eventually(
        lambda: len(fast.items) >= 26 and bus.stats()["failing"]["failed"] >= 26, timeout_s=5
    )
    assert [item.ts for item in fast.items if isinstance(item, MetricsSample)] == list(range(25))
    assert isinstance(fast.items[-1], LogBatch)
    stats = bus.stats()
    assert stats["fast"] == {"queued": 0, "delivered": 26, "dropped": 0, "failed": 0}
    assert stats["failing"]["failed"] == 26
    # The stuck sink holds one batch; ten more wait for it; the rest were dropped, counted.
    assert stats["stuck"]["queued"] == 10
    assert stuck.taken + 10 + stats["stuck"]["dropped"] == 26
    assert await bus.latest_metrics("agent-1") == {"ts": 24, "values": {"cpu": 24}}
    stuck.release.set()


async def test_a_real_agents_metrics_reach_the_file_sink_plugin(
    nursery: trio.Nursery, tmp_path: Path
) -> None:
    target = tmp_path / "out" / "telemetry.jsonl"
    document = {
        "server": {"listen": "127.0.0.1:0", "state_dir": str(tmp_path / "state")},
        "plugins": {
            "websocket": {"master_secrets": [SECRET]},
            "telemetry_file": {"enabled": True, "path": str(target), "max_bytes": 2048},
        },
    }
    config = config_from_document(document, "monitoring.toml", environ={})
    running: Running = await nursery.start(partial(serve_host, config, handle_signals=False))
    async with open_agent(running.agent_urls[0], "agent-t") as agent:
        for number in range(30):
            await agent.send(agent.session.metrics({"cpu": {"percent": number}}, now_ms()))
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()  # everything before the heartbeat was accepted
    await running.telemetry.flush(5)
    lines = [
        json.loads(line)
        for path in sorted(target.parent.glob("telemetry.jsonl*"), reverse=True)
        for line in path.read_text().splitlines()
    ]
    samples = [line for line in lines if line["type"] == "metrics"]
    assert [s["values"]["cpu"]["percent"] for s in samples][-3:] == [27, 28, 29]
    assert all(s["agentId"] == "agent-t" for s in samples)
    assert (target.parent / "telemetry.jsonl.1").exists()  # rotated past 2 KiB
    assert target.stat().st_mode & 0o777 == 0o600
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        sinks = (await http.get("/api/telemetry/sinks")).json()["sinks"]
        assert sinks["telemetry_file"]["dropped"] == 0
        assert sinks["telemetry_file"]["delivered"] >= 30
        status = (await http.get("/api/agents/agent-t")).json()
        assert status["metrics"]["values"] == {"cpu": {"percent": 29}}
        assert status["connected"] is False
        assert status["lastSeen"] is not None
