"""The server side of "nothing lost": admit each numbered message once, spool it, commit,
then acknowledge (docs/protocol.md, "Extension: ack").

Each message is offered to ``admit`` before anything acts on it: a number at or below the
agent's mark is a re-send and is dropped. Admitted marks and spooled messages are committed
together every ``commit_interval_ms``; only then (at most every ``ack_interval_ms``) does
the agent get an ``ack`` for them, so an acknowledged message is on disk and an
unacknowledged one is still in the agent's outbox. The same loop retires command records
past their deadline and prunes old rows.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

import trio

from ..clock import wall_ms
from ..protocol import Delivery, DeliveryLedger
from .store import StateStore, StoreError

if TYPE_CHECKING:
    from .commands import CommandBook
    from .config import GatewayConfig
    from .links import AgentLink

__all__ = ["Spool"]

log = logging.getLogger("monitoring_ws.gateway")
PRUNE_EVERY_S = 60.0


class Spool:
    """Delivery marks, the telemetry spool and the commit loop."""

    def __init__(
        self,
        config: GatewayConfig,
        store: StateStore,
        commands: CommandBook,
        connection_of: Callable[[str], AgentLink | None],
    ) -> None:
        self.config = config
        self.store = store
        self._commands = commands
        self._connection_of = connection_of
        committed = store.load_marks()
        self._ledger = DeliveryLedger(committed)
        #: What is on disk, per agent: what an agent is told right after it authenticates.
        self._committed = committed
        #: Admitted since the last commit: acknowledged once it is on disk.
        self._to_ack: dict[str, Delivery] = {}
        #: Committed, not yet acknowledged (acks go out every ``ack_interval_ms``).
        self._unacked: dict[str, Delivery] = {}
        self._round = trio.Event()
        self.duplicates = 0
        self.failed_commits = 0
        #: Whether the last commit went through (readiness: the state database is written).
        self.committing = True

    def admit(self, agent_id: str, delivery: Delivery | None) -> bool:
        """False for a re-sent message (drop it); True to act on it."""
        if delivery is None:
            return True
        if not self._ledger.admit(agent_id, delivery):
            self.duplicates += 1
            return False
        self._to_ack[agent_id] = delivery  # its mark is written with the next commit
        return True

    def keep(self, agent_id: str, kind: str, frame: str) -> None:
        """Spool an admitted metrics or log frame (the signed envelope, as received)."""
        self.store.add_telemetry(agent_id, kind, frame)

    def greet(self, connection: AgentLink) -> None:
        """Tell a newly authenticated agent what is already stored of its outbox."""
        mark = self._committed.get(connection.agent_id)
        if mark is not None:
            connection.send_ack(mark, wall_ms())

    async def durable(self) -> None:
        """Return once everything buffered before the call is committed; ``StoreError``
        when that commit failed (it is retried, but the caller should not count on it)."""
        if self.store.pending:
            round_done, failures = self._round, self.failed_commits
            await round_done.wait()
            if self.failed_commits != failures:
                raise StoreError("the state database could not be written (see the server log)")

    async def commit(self) -> None:
        """Commit what is buffered, then send the acks it covers."""
        to_ack: dict[str, Delivery] = {}

        def take_marks() -> None:
            # Inside the store's commit, where it takes its buffers: the marks written are
            # those of exactly the rows written (messages admitted while the commit waited
            # for its lock are in both, or in neither).
            nonlocal to_ack
            to_ack, self._to_ack = self._to_ack, {}
            for agent_id, mark in to_ack.items():
                self.store.put_mark(agent_id, mark)

        round_done, self._round = self._round, trio.Event()
        try:
            await self.store.commit(before=take_marks)
        except StoreError as exc:
            # Nothing is acknowledged, so agents keep it all; retried at the next round.
            self._to_ack = to_ack | self._to_ack
            self.failed_commits += 1
            self.committing = False
            if self.failed_commits in (1, 10) or self.failed_commits % 500 == 0:
                log.error(  # noqa: TRY400 - the message names the cause; a traceback adds nothing
                    "%s (failed %d times so far; retrying)", exc, self.failed_commits
                )
            return
        finally:
            round_done.set()
        self.committing = True
        self._committed.update(to_ack)
        self._unacked.update(to_ack)

    def send_acks(self) -> None:
        """Acknowledge what the commits since the last call stored (one frame per agent)."""
        unacked, self._unacked = self._unacked, {}
        now = wall_ms()
        for agent_id, mark in unacked.items():
            connection = self._connection_of(agent_id)
            if connection is not None and connection.closing is None:
                connection.send_ack(mark, now)

    async def run(self) -> None:
        """Commit every ``commit_interval_ms``, retire expired commands, prune old rows."""
        config = self.config
        interval = config.commit_interval_ms / 1000
        next_prune = trio.current_time() + PRUNE_EVERY_S
        next_ack = trio.current_time()
        try:
            while True:
                await trio.sleep(interval)
                self._commands.expire(wall_ms())
                await self.commit()
                if trio.current_time() >= next_ack:
                    # Acks are cumulative: one every ack_interval_ms covers all commits since.
                    next_ack = trio.current_time() + config.ack_interval_ms / 1000
                    self.send_acks()
                if trio.current_time() >= next_prune:
                    next_prune = trio.current_time() + PRUNE_EVERY_S
                    deleted = await self.store.prune(
                        wall_ms(),
                        config.command_retention_s * 1000,
                        config.telemetry_retention_s * 1000,
                        config.telemetry_max_bytes,
                        config.output_max_bytes,
                    )
                    if deleted:
                        log.info("pruned %d rows past retention from the state database", deleted)
        finally:
            with trio.CancelScope(shield=True):
                await self.commit()  # what was accepted before a shutdown is not lost
