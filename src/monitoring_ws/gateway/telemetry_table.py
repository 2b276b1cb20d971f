"""The telemetry spool's upkeep in the state database: where a time falls among its rows,
and deleting the oldest past retention or past its byte bound (store.py calls these in
its worker thread, under its lock)."""

from __future__ import annotations

import sqlite3

__all__ = ["last_id_before", "prune_telemetry"]


def prune_telemetry(
    db: sqlite3.Connection, before_ms: int, max_bytes: int | None, kept_bytes: int
) -> tuple[int, int]:
    """Delete rows received before ``before_ms``, then the oldest while more than
    ``max_bytes`` are kept; the rows deleted and the bytes kept after."""

    def delete_through(cutoff: int) -> int:
        nonlocal kept_bytes
        freed = db.execute(
            "DELETE FROM telemetry WHERE id <= ? RETURNING length(envelope)", (cutoff,)
        ).fetchall()
        kept_bytes -= sum(size for (size,) in freed)
        return len(freed)

    deleted = delete_through(last_id_before(db, before_ms))
    while max_bytes is not None and kept_bytes > max_bytes:
        excess, cutoff = kept_bytes - max_bytes, 0
        for row_id, size in db.execute(
            "SELECT id, length(envelope) FROM telemetry ORDER BY id LIMIT 10000"
        ):
            cutoff, excess = row_id, excess - size
            if excess <= 0:
                break
        if not cutoff:
            break
        deleted += delete_through(cutoff)
    return deleted, kept_bytes


def last_id_before(db: sqlite3.Connection, before_ms: int) -> int:
    """The last spooled row received before ``before_ms`` (0 if none).

    Rows are numbered in commit order and each commit stamps its own time, so times grow
    with ids: a binary search over the primary key finds the cut without an index on the
    time (which would cost every insert)."""
    low, high = db.execute("SELECT min(id), max(id) FROM telemetry").fetchone()
    if low is None:
        return 0
    found = low - 1
    while low <= high:
        middle = (low + high) // 2
        row = db.execute(
            "SELECT id, received_ms FROM telemetry WHERE id >= ? ORDER BY id LIMIT 1", (middle,)
        ).fetchone()
        if row is None or row[0] > high:
            high = middle - 1
        elif row[1] < before_ms:
            found, low = row[0], row[0] + 1
        else:
            high = middle - 1
    return int(found)
