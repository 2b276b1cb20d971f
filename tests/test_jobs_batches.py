"""A job through a transport that sends batches (as SSM's SendCommand, 50 instances a
call): the batches it is given, and a record of its own for every agent."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import trio

from monitoring_ws.host.command_service import CommandService
from monitoring_ws.host.commandlog import CommandLog
from monitoring_ws.host.fleet import Fleet
from monitoring_ws.host.jobs import JobRunner, JobStore, parse_job
from monitoring_ws.host.labels import LabelStore
from monitoring_ws.host.router import TransportRouter
from monitoring_ws.transports import (
    AgentListing,
    CommandOrder,
    CommandOutcome,
    Requester,
    TransportError,
)
from monitoring_ws.transports.records import RecordQuery

from .support.eventually import eventually


class Batching:
    """A transport that lists ``count`` agents and answers batches at once."""

    name = "batching"
    max_batch = 50

    def __init__(self, count: int) -> None:
        self.agents = [f"i-{n:017x}" for n in range(count)]
        self.batches: list[list[str]] = []

    async def can_reach(self, agent_id: str, command: str) -> bool:
        return agent_id in self.agents

    async def send_command(self, order: CommandOrder) -> CommandOutcome:
        raise AssertionError("a job sends through send_batch here")

    async def send_batch(
        self, orders: Sequence[CommandOrder]
    ) -> list[CommandOutcome | TransportError]:
        self.batches.append([order.agent_id for order in orders])
        await trio.sleep(0.01)
        return [
            CommandOutcome(f"ssm-{len(self.batches)}:{o.agent_id}", True, 3, {"pong": True})
            for o in orders
        ]

    async def list_agents(self) -> list[AgentListing]:
        return [AgentListing(agent_id, True, 0, {}, {"env": "prod"}) for agent_id in self.agents]

    async def describe_agent(self, agent_id: str) -> AgentListing | None:
        return None

    def health(self) -> dict[str, Any]:
        return {"ok": True}


async def test_a_job_sends_in_batches_and_keeps_a_record_each() -> None:
    transport = Batching(120)
    service = CommandService(
        TransportRouter([transport]),
        CommandLog(None),
        default_timeout_ms=5000,
        max_timeout_ms=60_000,
    )
    runner = JobRunner(service, Fleet(service.router, LabelStore(None)), JobStore(None))
    spec = parse_job(
        {"selector": "env=prod", "command": "ping", "maxConcurrency": "100%"},
        default_timeout_ms=5000,
        max_timeout_ms=60_000,
    )
    async with trio.open_nursery() as nursery:
        await nursery.start(runner.run)
        job = await runner.create(spec, Requester("test"), lambda _: True)

        async def ended() -> bool:
            found = await runner.find(job.job_id)
            return found is not None and found.state.ended

        await eventually(ended, what="the job ended")
        nursery.cancel_scope.cancel()
    assert sorted(len(batch) for batch in transport.batches) == [20, 50, 50]
    assert sorted(a for batch in transport.batches for a in batch) == transport.agents
    records = await service.log.list(RecordQuery(limit=500))
    assert len(records) == 120
    assert len({record["commandId"] for record in records}) == 120
    assert all(record["requestedBy"]["label"] == f"job:{job.job_id}" for record in records)
    assert job.counts()["succeeded"] == 120
    # A summary does not carry a selector's every id.
    listed = parse_job(
        {"selector": {"ids": transport.agents}, "command": "ping"},
        default_timeout_ms=5000,
        max_timeout_ms=60_000,
    )
    shown = attrs.evolve(job, spec=listed).summary()["selector"]
    assert (len(shown["ids"]), shown["idsCount"]) == (100, 120)
