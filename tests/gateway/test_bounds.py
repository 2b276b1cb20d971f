"""Bounded after authentication: a rate limit per agent, caches and the spool by bytes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.agent import runner as runner_module
from monitoring_ws.agent.runner import CommandRunner
from monitoring_ws.clock import wall_ms
from monitoring_ws.gateway import commands as commands_module
from monitoring_ws.gateway.commands import CommandBook
from monitoring_ws.gateway.store import StateStore
from monitoring_ws.protocol import (
    CloseCode,
    Command,
    CommandResult,
    RateLimit,
    RateMeter,
    WorkBudget,
)
from monitoring_ws.transports import Requester
from monitoring_ws.transports.records import CommandRecord, CommandState

from ..agent.test_agent import settings_for
from ..conftest import StartServer
from ..support.observe import counters
from .agents import close_code, now_ms, open_agent

pytestmark = pytest.mark.usefixtures("agent_listener")  # both listeners


def test_rate_meter() -> None:
    meter = RateMeter(RateLimit(messages_per_s=10, bytes_per_s=1000, burst_s=2), now_ms=0)
    assert all(meter.take(10, 0) is None for _ in range(20))  # the burst: 20 messages
    assert meter.take(10, 0) == 1  # then one per 100 ms
    assert meter.take(10, 100) is None
    assert meter.take(10, 100) == 1
    big = RateMeter(RateLimit(messages_per_s=100, bytes_per_s=1000, burst_s=1), now_ms=0)
    assert big.take(900, 0) is None
    assert big.take(900, 0) == 1  # bytes: 800 more needed at 1000/s
    assert big.take(900, 5000) is None  # refilled (to the burst, not beyond)


async def test_an_agent_over_its_rate_gets_4429(start_server: StartServer) -> None:
    running = await start_server(agent_messages_per_s=5, agent_burst_s=2)
    async with open_agent(running.agent_urls[0], "agent-chatty") as agent:
        for _ in range(11):
            await agent.send(agent.session.metrics({"x": 1}, now_ms()))
        assert await close_code(agent.ws) == CloseCode.TOO_MANY_ATTEMPTS
        assert (agent.ws.closed.reason or "").startswith("retry-after=")  # type: ignore[union-attr]
    assert (await counters(running.api_url))["closed_4429"] == 1


async def test_the_agents_remembered_results_are_bounded_by_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(runner_module, "REMEMBERED_BYTES", 1 << 20)

    async def big(args: Any, context: Any) -> str:
        return "x" * 200_000

    runner = CommandRunner(settings_for("ws://127.0.0.1:1/agent"), {"big": big})
    for i in range(20):
        await runner.execute(Command(f"c-{i}", "big", {}, 10_000))
    assert len(runner._results) <= 5
    assert runner._results_bytes <= 1 << 20
    assert "c-19" in runner._results


async def test_finished_records_in_memory_are_bounded_by_bytes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(commands_module, "RECENT_BYTES", 1 << 20)
    book = CommandBook(StateStore(None))
    now = wall_ms()
    for i in range(20):
        record = CommandRecord(
            command_id=f"c-{i}",
            agent_id="a",
            command="run",
            args={},
            timeout_ms=1000,
            transport="websocket",
            requested_by=Requester("127.0.0.1"),
            created_ms=now,
            updated_ms=now,
        )
        record.answered(CommandResult(f"c-{i}", True, 1, result="x" * 200_000), now)
        assert record.state is CommandState.SUCCEEDED
        book._remember(record)
    assert book._recent_bytes <= 1 << 20
    assert 1 <= len(book._recent) <= 5


async def test_the_spool_is_bounded_by_bytes(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    frame = '{"pad":"' + "f" * 990 + '"}'
    assert len(frame) == 1000
    for _ in range(100):
        store.add_telemetry("a", "metrics", frame)
    await store.commit(wall_ms())
    assert store.telemetry_bytes == 100_000
    deleted = await store.prune(wall_ms(), 10**9, 10**9, telemetry_max_bytes=20_000)
    assert deleted == 80
    assert store.telemetry_bytes == 20_000
    assert store.counts()["telemetry"] == 20
    items = await store.telemetry(after=0, limit=100)
    assert items[0]["id"] == 81  # the newest were kept
    store.close()
    assert StateStore(tmp_path / "state.sqlite3").telemetry_bytes == 20_000


def test_a_rate_limit_that_no_full_frame_could_pass_is_refused() -> None:
    from monitoring_ws.gateway.config import ConfigError, GatewayConfig  # noqa: PLC0415

    with pytest.raises(ConfigError, match="agent_burst_s"):
        GatewayConfig(agent_bytes_per_s=10_000, agent_burst_s=1).check()
    GatewayConfig(agent_bytes_per_s=1 << 20, agent_burst_s=1).check()


def test_work_budget() -> None:
    budget = WorkBudget(per_s=0.01, burst_s=0.05, now_ms=0)
    assert budget.charge(0.04, 0) == 0  # within the burst
    assert budget.charge(0.03, 0) == pytest.approx(2.0)  # 20 ms over at 10 ms/s
    assert budget.charge(0.0, 2000) == 0  # paid back
    assert budget.charge(0.0, 100_000) == 0
    assert budget.charge(0.05, 100_000) == 0  # refilled to the burst, not beyond
    assert budget.charge(0.001, 100_000) == pytest.approx(0.1)


async def test_an_agent_past_its_share_of_the_server_is_read_later(
    start_server: StartServer,
) -> None:
    running = await start_server(agent_cpu_ms_per_s=20, agent_cpu_burst_ms=1)
    costly = {"pad": [[[0]]] * 10_000}  # ~30,000 values: several ms to read each
    async with open_agent(running.agent_urls[0], "agent-costly") as agent:
        for _ in range(2):
            await agent.send(agent.session.metrics(costly, now_ms()))
        await agent.send(agent.session.heartbeat(now_ms()))
        with trio.fail_after(60):  # a hang guard: each wait is its frame's cost x 50
            while not await agent.events():
                pass
        assert agent.ws.closed is None  # slowed down, not closed: nothing is lost
    stats = await counters(running.api_url)
    assert stats["throttled"] >= 1
    assert stats["frames_metrics"] == 2
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        exposition = (await http.get("/metrics")).text
    throttled = re.search(r"^monitoring_ws_agent_throttled_seconds_total (\S+)$", exposition, re.M)
    assert throttled is not None
    assert float(throttled.group(1)) > 0  # seconds the agent was not read
