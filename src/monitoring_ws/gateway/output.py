"""Streamed command output on the server (docs/api.md, "Command output"): chunks taken
from the agent that runs the command, each command's window, and who waits for more.

A chunk is kept only from the agent the command was sent to, once (its ``seq`` above the
last one kept). A command keeps at most ``window_bytes`` of output: past it the oldest
chunks go, and a reader sees the numbers they had as dropped.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable

import trio

from ..protocol.output import CommandOutput
from .output_table import OutputRow, OutputTable, chunk_size
from .store import StateStore

__all__ = ["OutputKeeper", "OutputNews"]

#: Commands whose position is remembered in memory (others are read back from the
#: database when a chunk of theirs comes).
TALLIES = 10_000
#: A window is cut when it is this share over (one DELETE per eighth, not per chunk).
_SLACK = 8


class OutputKeeper:
    """Admits chunks into the state store and wakes readers waiting for them."""

    def __init__(
        self,
        store: StateStore,
        *,
        window_bytes: int,
        agent_of: Callable[[str], str | None],
    ) -> None:
        """``agent_of``: the agent a live or recent command was sent to (None: unknown)."""
        self._store = store
        self.window_bytes = window_bytes
        self._agent_of = agent_of
        #: Per command: the last ``seq`` kept, the position after it, and where its window
        #: starts.
        self._tallies: OrderedDict[str, list[int]] = OrderedDict()
        self._waiters: dict[str, list[trio.Event]] = {}
        #: Chunks refused: for a command this agent was not sent (or not recently).
        self.unmatched = 0
        self.chunks = 0
        self.bytes = 0

    async def admit(self, agent_id: str, output: CommandOutput) -> bool:
        """Keep a chunk; False when it is not this agent's, or was kept before."""
        command_id = output.command_id
        if self._agent_of(command_id) != agent_id:
            self.unmatched += 1
            return False
        tally = self._tallies.get(command_id)
        if tally is None:
            tally = await self._load(command_id)
        else:
            self._tallies.move_to_end(command_id)
        seq, position, start = tally
        if output.seq <= seq:
            return False  # sent again (a reconnect before the ack): kept already
        size = output.size
        self._store.output.add(
            OutputRow(
                command_id,
                output.seq,
                output.stream,
                output.offset,
                position,
                output.binary,
                output.data,
            )
        )
        position += size
        if position - start > self.window_bytes + self.window_bytes // _SLACK:
            start = position - self.window_bytes
            self._store.output.cut(command_id, start)
        tally[:] = [output.seq, position, start]
        self.chunks += 1
        self.bytes += size
        self.notify(command_id)
        return True

    async def _load(self, command_id: str) -> list[int]:
        seq, position = await self._store.read(OutputTable.tally, command_id)
        for row in self._store.output.buffered(command_id, seq):
            seq, position = row.seq, row.position + chunk_size(row.binary, row.data)
        tally = [seq, position, max(0, position - self.window_bytes)]
        self._tallies[command_id] = tally
        while len(self._tallies) > TALLIES:
            self._tallies.popitem(last=False)
        return tally

    async def read(self, command_id: str, after: int, limit: int) -> list[OutputRow]:
        """Chunks numbered above ``after``, in order: written and still buffered."""
        buffered = self._store.output.buffered(command_id, after)  # before the read: none missed
        rows = await self._store.read(OutputTable.read, command_id, after, limit)
        if len(rows) < limit and buffered:
            kept = {row.seq for row in rows}
            rows += [row for row in buffered if row.seq not in kept]
            rows.sort(key=lambda row: row.seq)
        return rows[:limit]

    def notify(self, command_id: str) -> None:
        """Wake whoever waits on this command (a chunk came, or its record changed)."""
        for event in self._waiters.pop(command_id, ()):
            event.set()

    def watch(self, command_ids: Iterable[str]) -> OutputNews:
        """News of these commands from now on (close it when done)."""
        return OutputNews(self._waiters, list(command_ids))


class OutputNews:
    """An event set by the first news of some commands after it was made."""

    __slots__ = ("_event", "_ids", "_waiters")

    def __init__(self, waiters: dict[str, list[trio.Event]], ids: list[str]) -> None:
        self._waiters, self._ids, self._event = waiters, ids, trio.Event()
        for command_id in ids:
            waiters.setdefault(command_id, []).append(self._event)

    async def wait(self, timeout_s: float) -> None:
        with trio.move_on_after(timeout_s):
            await self._event.wait()

    def close(self) -> None:
        for command_id in self._ids:
            waiting = self._waiters.get(command_id)
            if waiting is not None and self._event in waiting:
                waiting.remove(self._event)
                if not waiting:
                    del self._waiters[command_id]
