"""The ``output`` table of the state database: streamed command output, one row a chunk.

Rows are buffered like every other write and go in with the commit that also writes the
delivery marks covering them (store.py), so an acknowledged chunk is on disk and an
unacknowledged one is still in the agent's outbox. Reads see the buffered rows too: a
follower gets a chunk as soon as it is admitted, not a commit later.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import attrs

__all__ = ["OUTPUT_SCHEMA", "OutputRow", "OutputTable", "chunk_size"]

OUTPUT_SCHEMA = """
CREATE TABLE IF NOT EXISTS output (
    id INTEGER PRIMARY KEY,
    command_id TEXT NOT NULL,
    seq INTEGER NOT NULL,
    stream TEXT NOT NULL,
    offset INTEGER NOT NULL,
    position INTEGER NOT NULL,
    binary INTEGER NOT NULL,
    data TEXT NOT NULL,
    received_ms INTEGER NOT NULL
);
CREATE UNIQUE INDEX IF NOT EXISTS output_chunk ON output (command_id, seq);
"""


@attrs.frozen
class OutputRow:
    """One chunk as kept: ``position`` counts the command's bytes before it, both streams
    together (what its window is measured in)."""

    command_id: str
    seq: int
    stream: str
    offset: int
    position: int
    binary: bool
    data: str

    def to_json(self) -> dict[str, Any]:
        return {
            "type": "output",
            "seq": self.seq,
            "stream": self.stream,
            "offset": self.offset,
            "base64" if self.binary else "text": self.data,
        }


class OutputTable:
    """Buffered chunks and window cuts; the SQL that writes, reads and prunes them."""

    __slots__ = ("_cuts", "_rows", "bytes")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._rows: list[OutputRow] = []
        #: Per command, drop the chunks that start before this position (its window).
        self._cuts: dict[str, int] = {}
        #: Characters of chunk data on disk (kept by commits and prunes).
        self.bytes = int(
            db.execute("SELECT coalesce(sum(length(data)), 0) FROM output").fetchone()[0]
        )

    @property
    def pending(self) -> int:
        return len(self._rows) + len(self._cuts)

    def add(self, row: OutputRow) -> None:
        self._rows.append(row)

    def cut(self, command_id: str, before_position: int) -> None:
        self._cuts[command_id] = max(before_position, self._cuts.get(command_id, 0))

    def take(self) -> tuple[list[OutputRow], dict[str, int]]:
        """The buffers, emptied (handed to ``write``; ``restore`` when that fails)."""
        rows, self._rows = self._rows, []
        cuts, self._cuts = self._cuts, {}
        return rows, cuts

    def restore(self, rows: list[OutputRow], cuts: dict[str, int]) -> None:
        self._rows[:0] = rows
        for command_id, position in cuts.items():
            self.cut(command_id, position)

    def write(
        self, db: sqlite3.Connection, rows: list[OutputRow], cuts: dict[str, int], now_ms: int
    ) -> None:
        """Inside the commit's transaction."""
        db.executemany(
            "INSERT OR IGNORE INTO output (command_id, seq, stream, offset, position, binary, "
            "data, received_ms) VALUES (?,?,?,?,?,?,?,?)",
            [
                (r.command_id, r.seq, r.stream, r.offset, r.position, r.binary, r.data, now_ms)
                for r in rows
            ],
        )
        self.bytes += sum(len(r.data) for r in rows)
        for command_id, position in cuts.items():
            freed = db.execute(
                "DELETE FROM output WHERE command_id = ? AND position < ? RETURNING length(data)",
                (command_id, position),
            ).fetchall()
            self.bytes -= sum(size for (size,) in freed)

    def buffered(self, command_id: str, after: int) -> list[OutputRow]:
        """Chunks not yet written, of one command, numbered above ``after``."""
        cut = self._cuts.get(command_id, 0)
        return [
            r
            for r in self._rows
            if r.command_id == command_id and r.seq > after and r.position >= cut
        ]

    @staticmethod
    def read(db: sqlite3.Connection, command_id: str, after: int, limit: int) -> list[OutputRow]:
        rows = db.execute(
            "SELECT seq, stream, offset, position, binary, data FROM output "
            "WHERE command_id = ? AND seq > ? ORDER BY seq LIMIT ?",
            (command_id, after, limit),
        ).fetchall()
        return [
            OutputRow(command_id, seq, stream, offset, position, bool(binary), data)
            for seq, stream, offset, position, binary, data in rows
        ]

    @staticmethod
    def tally(db: sqlite3.Connection, command_id: str) -> tuple[int, int]:
        """The last chunk's ``seq`` and the position after it (0, 0 when none is kept)."""
        row = db.execute(
            "SELECT seq, position, binary, data FROM output WHERE command_id = ? "
            "ORDER BY seq DESC LIMIT 1",
            (command_id,),
        ).fetchone()
        if row is None:
            return 0, 0
        seq, position, binary, data = row
        return int(seq), int(position) + chunk_size(bool(binary), data)

    def prune(self, db: sqlite3.Connection, before_ms: int, max_bytes: int) -> int:
        """Delete chunks received before ``before_ms``, then the oldest past ``max_bytes``;
        rows deleted. Ids grow with time (commit order): both cut at an id."""
        deleted = 0
        # A scan (no index on the time: it would cost every insert), once a minute.
        cutoff = db.execute(
            "SELECT max(id) FROM output WHERE received_ms < ?", (before_ms,)
        ).fetchone()[0]
        while True:
            if cutoff is None:
                if self.bytes <= max_bytes:
                    return deleted
                excess, cutoff = self.bytes - max_bytes, None
                for row_id, size in db.execute(
                    "SELECT id, length(data) FROM output ORDER BY id LIMIT 10000"
                ):
                    cutoff, excess = row_id, excess - size
                    if excess <= 0:
                        break
                if cutoff is None:
                    return deleted
            freed = db.execute(
                "DELETE FROM output WHERE id <= ? RETURNING length(data)", (cutoff,)
            ).fetchall()
            self.bytes -= sum(size for (size,) in freed)
            deleted += len(freed)
            cutoff = None


def chunk_size(binary: bool, data: str) -> int:
    """The bytes a kept chunk stands for."""
    if binary:
        return len(data) // 4 * 3 - data[-2:].count("=")
    return len(data.encode("utf-8", "surrogatepass"))
