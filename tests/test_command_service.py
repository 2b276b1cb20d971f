"""``CommandService``: every command one way, the requester an explicit field of the order."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import trio

from monitoring_ws.host.audit import AuditLog
from monitoring_ws.host.command_service import CommandService
from monitoring_ws.host.commandlog import CommandLog
from monitoring_ws.host.events import EventHub
from monitoring_ws.host.router import TransportRouter
from monitoring_ws.transports import (
    AgentNotConnectedError,
    CommandOrder,
    CommandOutcome,
    CommandTimeoutError,
    InvalidCommandError,
    Requester,
)
from monitoring_ws.transports.records import RecordQuery

ASKED_BY = Requester("192.0.2.7", "token:ops", "nightly-check")


class Scripted:
    """A transport (as a plugin writes one) that answers as told and remembers orders."""

    def __init__(self, name: str, answer: CommandOutcome | Exception, reach: bool = True) -> None:
        self.name, self.answer, self.reach = name, answer, reach
        self.orders: list[CommandOrder] = []

    async def can_reach(self, agent_id: str, command: str) -> bool:
        return self.reach

    async def send_command(self, order: CommandOrder) -> CommandOutcome:
        self.orders.append(order)
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer

    def health(self) -> dict[str, Any]:
        return {"ok": True}


class Keeping(Scripted):
    """One that keeps its own records and can answer later."""

    async def submit_command(self, order: CommandOrder) -> tuple[str, str]:
        self.orders.append(order)
        return "kept-1", "sent"

    async def command_record(self, command_id: str) -> dict[str, Any] | None:
        return None

    async def list_records(self, query: RecordQuery) -> list[dict[str, Any]]:
        return []

    async def cancel_command(self, command_id: str) -> dict[str, Any]:
        return {}


def service(tmp_path: Path, *transports: Any) -> tuple[CommandService, AuditLog]:
    audit = AuditLog(tmp_path / "audit.jsonl")
    built = CommandService(
        TransportRouter(transports),
        CommandLog(None),
        default_timeout_ms=30_000,
        max_timeout_ms=60_000,
        events=EventHub(),
        audit=audit,
    )
    return built, audit


async def audit_lines(audit: AuditLog, path: Path) -> list[dict[str, Any]]:
    async with trio.open_nursery() as nursery:
        await nursery.start(audit.run)
        await audit.flush(5)
        nursery.cancel_scope.cancel()
    return [json.loads(line) for line in path.read_text().splitlines()]


def order(agent_id: str = "web-1", command: str = "ping", **more: Any) -> CommandOrder:
    return CommandOrder(agent_id, command, {"n": 1}, more.pop("timeout_ms", 5000), ASKED_BY)


async def test_the_requester_reaches_the_transport_the_record_and_the_audit(
    tmp_path: Path,
) -> None:
    plain = Scripted("plain", CommandOutcome("c-1", True, 3, result={"pong": True}))
    commands, audit = service(tmp_path, plain)
    routed = await commands.run(order())
    assert routed.to_json()["transport"] == "plain"
    assert plain.orders == [order()]  # the same value, requester included
    record = await commands.log.get("c-1")
    assert record is not None
    assert record.requested_by == ASKED_BY
    assert record.transport == "plain"
    (line,) = await audit_lines(audit, tmp_path / "audit.jsonl")
    assert line["event"] == "command"
    assert line["requestedBy"] == ASKED_BY.to_json()
    assert (line["agentId"], line["commandId"], line["outcome"]) == ("web-1", "c-1", "succeeded")


async def test_a_failure_after_sending_is_recorded_with_its_transport_and_raised(
    tmp_path: Path,
) -> None:
    slow = Scripted("slow", CommandTimeoutError("no answer", "c-2"))
    never = Scripted("never", CommandOutcome("c-3", True, 1))
    commands, audit = service(tmp_path, slow, never)
    with pytest.raises(CommandTimeoutError):
        await commands.run(order())
    assert never.orders == []  # maybe delivered: never sent twice
    record = await commands.log.get("c-2")
    assert record is not None
    assert (record.transport, record.state.value) == ("slow", "timed_out")
    (line,) = await audit_lines(audit, tmp_path / "audit.jsonl")
    assert (line["transport"], line["outcome"]) == ("slow", "error")
    assert line["error"] == "command_timeout"


async def test_via_takes_that_transport_only(tmp_path: Path) -> None:
    first = Scripted("first", CommandOutcome("c-4", True, 1))
    second = Scripted("second", AgentNotConnectedError("agent web-1 is not connected"))
    commands, _ = service(tmp_path, first, second)
    with pytest.raises(AgentNotConnectedError, match="not connected"):
        await commands.run(order(), via="second")
    assert first.orders == []  # no fallback for a route that names its transport
    assert await commands.log.get("c-4") is None


async def test_without_waiting_only_a_transport_that_keeps_records_takes_it(
    tmp_path: Path,
) -> None:
    plain = Scripted("plain", CommandOutcome("c-5", True, 1))
    keeper = Keeping("keeper", CommandOutcome("c-6", True, 1))
    commands, audit = service(tmp_path, plain, keeper)
    accepted = await commands.submit(order())
    assert (accepted.command_id, accepted.state, accepted.transport) == ("kept-1", "sent", "keeper")
    assert plain.orders == []
    keeper.reach = False
    with pytest.raises(AgentNotConnectedError, match='"wait": true'):
        await commands.submit(order())
    lines = await audit_lines(audit, tmp_path / "audit.jsonl")
    assert [(line["outcome"], line.get("error")) for line in lines] == [
        ("sent", None),
        ("error", "agent_not_connected"),
    ]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"command": "rm -rf"}, "not a command name"),
        ({"timeout_ms": 0}, "between 1 and 60000"),
        ({"timeout_ms": 60_001}, "between 1 and 60000"),
    ],
)
async def test_an_order_no_transport_may_take_is_refused_before_any_sees_it(
    tmp_path: Path, changes: Mapping[str, Any], message: str
) -> None:
    plain = Scripted("plain", CommandOutcome("c-7", True, 1))
    commands, _ = service(tmp_path, plain)
    with pytest.raises(InvalidCommandError, match=message):
        await commands.run(order(**changes))
    assert plain.orders == []
