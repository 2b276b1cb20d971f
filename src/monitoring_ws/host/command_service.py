"""``CommandService``: the one way every command goes, whoever asks (the transport-neutral
route, the seed's route, ``wait: false``, the dashboard, jobs).

It checks the order, picks the transport (the router, or the one a route names), keeps
the record of transports that keep none themselves, writes the audit line, publishes the
``command`` event and counts the outcome, then answers or returns at once.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import attrs

from ..clock import wall_ms
from ..protocol.payloads import NAME
from ..transports import (
    AgentNotConnectedError,
    CommandOrder,
    CommandOutcome,
    InvalidCommandError,
    KeepsRecords,
    SendsBatches,
    TransportError,
)
from .audit import AuditLog
from .commandlog import CommandLog, ended_record
from .events import EventHub
from .metrics import ServerMetrics
from .router import NOT_DELIVERED, Routed, TransportRouter, send_through

__all__ = ["Accepted", "CommandService"]


@attrs.frozen
class Accepted:
    """A command sent without waiting: its id and state once its record is durable."""

    command_id: str
    state: str
    transport: str


class CommandService:
    """Runs orders through the router; one record, audit line, event and count each."""

    def __init__(
        self,
        router: TransportRouter,
        log: CommandLog,
        *,
        default_timeout_ms: int,
        max_timeout_ms: int,
        events: EventHub | None = None,
        metrics: ServerMetrics | None = None,
        audit: AuditLog | None = None,
        clock: Callable[[], int] = wall_ms,
    ) -> None:
        self.router = router
        self.log = log
        #: A command's timeout when its caller gives none, and the most it may give.
        self.default_timeout_ms, self.max_timeout_ms = default_timeout_ms, max_timeout_ms
        self._events = EventHub() if events is None else events
        self._metrics = ServerMetrics() if metrics is None else metrics
        self._audit = AuditLog(None) if audit is None else audit
        self._clock = clock
        #: The transports that keep their own records (and can answer later).
        self.keepers = tuple(t for t in router.transports if isinstance(t, KeepsRecords))
        self._keeper_names = frozenset(t.name for t in self.keepers)

    def check(self, order: CommandOrder) -> None:
        """Raise ``InvalidCommandError`` for an order no transport may be given."""
        if not NAME.fullmatch(order.command):
            raise InvalidCommandError(f"{order.command[:64]!r} is not a command name")
        if order.command_id is not None and not NAME.fullmatch(order.command_id):
            raise InvalidCommandError(f"{order.command_id[:64]!r} is not a command id")
        if not 1 <= order.timeout_ms <= self.max_timeout_ms:
            raise InvalidCommandError(f"timeoutMs must be between 1 and {self.max_timeout_ms}")

    async def run(self, order: CommandOrder, *, via: str | None = None) -> Routed:
        """Run the order and wait for its answer (``via``: that transport only, no
        fallback). Raises ``TransportError`` when there is none."""
        self.check(order)
        started = self._clock()
        try:
            routed = await (
                self.router.send_command(order)
                if via is None
                else send_through(self.router.named(via), order)
            )
        except TransportError as exc:  # no transport took it: nothing ran, nothing kept
            self._audit_line(order, None, exc)
            raise
        if routed.transport not in self._keeper_names:  # the others keep their own records
            await self._keep(order, routed, started)
        self._audit_line(order, routed.transport, routed.outcome)
        if isinstance(routed.outcome, TransportError):
            raise routed.outcome
        return routed

    async def run_batch(
        self, orders: Sequence[CommandOrder], via: str
    ) -> list[Routed | TransportError]:
        """Orders of one command to several agents through ``via``, a transport that
        ``SendsBatches`` (at most its ``max_batch``): each kept, audited and counted as if
        run alone; a ``TransportError`` for each that failed."""
        transport = self.router.named(via)
        if not isinstance(transport, SendsBatches):
            raise TypeError(f"transport {via} does not send batches")
        for order in orders:
            self.check(order)
        started = self._clock()
        answers = await transport.send_batch(orders)
        results: list[Routed | TransportError] = []
        for order, answer in zip(orders, answers, strict=True):
            if isinstance(answer, NOT_DELIVERED):  # never left: nothing ran, nothing kept
                self._audit_line(order, None, answer)
                results.append(answer)
                continue
            routed = Routed(via, answer)
            if via not in self._keeper_names:
                await self._keep(order, routed, started)
            self._audit_line(order, via, answer)
            results.append(answer if isinstance(answer, TransportError) else routed)
        return results

    async def submit(self, order: CommandOrder, *, via: str | None = None) -> Accepted:
        """Send without waiting, through a transport that keeps records (``via``: that
        one, without asking first whether it reaches the agent)."""
        self.check(order)
        try:
            accepted = await self._submit(order, via)
        except TransportError as exc:
            self._audit_line(order, via, exc)
            raise
        self._audit_line(order, accepted.transport, accepted.state, command_id=accepted.command_id)
        return accepted

    async def _submit(self, order: CommandOrder, via: str | None) -> Accepted:
        for transport in self._candidates(via):
            if via is not None or await transport.can_reach(order.agent_id, order.command):
                command_id, state = await transport.submit_command(order)
                return Accepted(command_id, state, transport.name)
        message = f"no transport that can answer later reaches {order.agent_id} for "
        raise AgentNotConnectedError(f'{message}{order.command!r} (send with "wait": true)')

    def _candidates(self, via: str | None) -> Sequence[KeepsRecords]:
        # Only a transport that keeps records can take a command and answer later.
        return self.keepers if via is None else [t for t in self.keepers if t.name == via]

    async def _keep(self, order: CommandOrder, routed: Routed, started_ms: int) -> None:
        record = ended_record(routed.transport, order, created_ms=started_ms, answer=routed.outcome)
        await self.log.record(record)
        self._events.publish("command", record.agent_id, record.to_json())
        ended_ms = record.finished_ms or record.updated_ms
        seconds = (ended_ms - started_ms) / 1000
        self._metrics.command_ended(routed.transport, record.state.value, seconds)

    def _audit_line(
        self,
        order: CommandOrder,
        transport: str | None,
        outcome: CommandOutcome | TransportError | str,
        *,
        command_id: str | None = None,
    ) -> None:
        """One ``command`` line: who asked what of which agent, and what came of it."""
        fields: dict[str, Any] = {
            "agentId": order.agent_id,
            "command": order.command,
            "commandId": command_id or _command_id_of(outcome),
            "transport": transport,
            "requestedBy": order.requester.to_json(),
        }
        if isinstance(outcome, CommandOutcome):
            fields["outcome"] = "succeeded" if outcome.ok else "failed"
        elif isinstance(outcome, TransportError):
            fields["outcome"], fields["error"] = "error", outcome.code
        else:
            fields["outcome"] = outcome  # accepted: the record's state
        self._audit.record("command", **fields)


def _command_id_of(outcome: object) -> str | None:
    found = getattr(outcome, "command_id", None)
    return found if isinstance(found, str) else None
