"""The state directory's SQLite database: command records, the telemetry spool, and each
agent's delivery mark (docs/operations.md).

Writes are buffered and committed together, every ``commit_interval_ms``, in a worker thread
(the event loop never waits on the disk). One commit holds the telemetry rows, the command
records and the delivery marks that cover them, so after a crash (``kill -9`` included) the
marks say exactly what is stored: an agent re-sends the rest and nothing is kept twice.
WAL with ``synchronous=NORMAL`` by default: a commit survives the process dying; a power cut
can lose the last commits, acknowledged ones included (``state_sync = "full"`` fsyncs each
commit instead).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

import trio

from ..clock import wall_ms
from ..host.plugins import StartupError
from ..private import private_file
from ..protocol import Delivery
from ..transports.records import CommandRecord, RecordQuery
from .output_table import OUTPUT_SCHEMA, OutputTable
from .telemetry_table import last_id_before, prune_telemetry

__all__ = ["SCHEMA_VERSION", "StateStore", "StoreError"]

SCHEMA_VERSION = 1
_T = TypeVar("_T")
_SCHEMA = (
    """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    agent_id TEXT NOT NULL,
    state TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    finished_ms INTEGER,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_open ON commands (created_ms) WHERE finished_ms IS NULL;
CREATE INDEX IF NOT EXISTS commands_finished ON commands (finished_ms);
CREATE INDEX IF NOT EXISTS commands_created ON commands (created_ms, command_id);
CREATE TABLE IF NOT EXISTS telemetry (
    id INTEGER PRIMARY KEY,
    agent_id TEXT NOT NULL,
    type TEXT NOT NULL,
    received_ms INTEGER NOT NULL,
    envelope TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS delivery (
    agent_id TEXT PRIMARY KEY,
    stream TEXT NOT NULL,
    seq INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS seen (agent_id TEXT PRIMARY KEY, seen_ms INTEGER NOT NULL);
"""
    + OUTPUT_SCHEMA
)


class StoreError(StartupError):
    """The state database cannot be opened or used; the message says what to fix."""

    hint = "see --state-dir"


class StateStore:
    """Buffered writes, one transaction per ``commit``; reads go straight to the database."""

    def __init__(
        self,
        path: Path | None,
        *,
        sync: str = "normal",
        on_commit: Callable[[list[tuple[str, str]]], Awaitable[None]] | None = None,
        timed: Callable[[float], None] | None = None,
    ) -> None:
        #: None keeps everything in memory (tests and benchmarks that do not restart).
        self.path = path
        if sync not in {"normal", "full"}:
            raise StoreError(f"state_sync must be normal or full, got {sync!r}")
        self._sync = sync.upper()
        self._lock = threading.Lock()
        self._limiter = trio.CapacityLimiter(1)
        self._writing = trio.Lock()  # one commit or prune at a time
        self._db = self._connect()
        #: Characters of spooled frames on disk (kept by commits and prunes).
        self.telemetry_bytes = int(
            self._db.execute("SELECT coalesce(sum(length(envelope)), 0) FROM telemetry").fetchone()[
                0
            ]
        )
        #: Streamed command output: buffered with the rest, committed with the marks.
        self.output = OutputTable(self._db)
        self._telemetry: list[tuple[str, str, str]] = []
        self._commands: dict[str, CommandRecord] = {}
        self._marks: dict[str, tuple[str, int]] = {}
        self._seen: dict[str, int] = {}
        self.commits = 0
        #: Called with ``(commandId, record JSON)`` of each commit's records (a cluster
        #: mirrors them); failures there are the callee's to handle.
        self._on_commit = on_commit
        #: Told how long each commit took (metrics).
        self._timed = timed

    def _connect(self) -> sqlite3.Connection:
        target = ":memory:"
        if self.path is not None:
            try:
                private_file(self.path)
            except OSError as exc:
                raise StoreError(
                    f"cannot create the state database in the state directory: {exc}"
                ) from None
            target = str(self.path)
        try:
            db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute(f"PRAGMA synchronous={self._sync}")
            db.executescript(_SCHEMA)
            row = db.execute("SELECT value FROM meta WHERE key = 'schema'").fetchone()
            if row is None:
                db.execute("INSERT INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
            elif int(row[0]) != SCHEMA_VERSION:
                raise StoreError(
                    f"{target} has schema {row[0]}, this version reads {SCHEMA_VERSION}: "
                    "point --state-dir at a new directory or upgrade"
                )
        except sqlite3.Error as exc:
            raise StoreError(f"cannot open the state database {target}: {exc}") from None
        return db

    # -- buffered writes (no I/O until ``commit``) ----------------------------------------

    @property
    def pending(self) -> int:
        return (
            len(self._telemetry)
            + len(self._commands)
            + len(self._marks)
            + len(self._seen)
            + self.output.pending
        )

    def add_telemetry(self, agent_id: str, kind: str, envelope: str) -> None:
        """Spool a received frame (``receivedAt`` is its commit's time)."""
        self._telemetry.append((agent_id, kind, envelope))

    def put_command(self, record: CommandRecord) -> None:
        """Store ``record`` as it is at the next commit (later changes overwrite earlier)."""
        self._commands[record.command_id] = record

    def put_mark(self, agent_id: str, mark: Delivery) -> None:
        self._marks[agent_id] = (mark.stream, mark.seq)

    def put_seen(self, agent_id: str, seen_ms: int) -> None:
        """When the agent was last connected (kept for listings of who went offline)."""
        self._seen[agent_id] = seen_ms

    async def commit(
        self, now_ms: int | None = None, before: Callable[[], None] | None = None
    ) -> None:
        """Write everything buffered so far in one transaction.

        ``before`` is called right before the buffers are taken, with no checkpoint in
        between, so that what it puts (the delivery marks) covers exactly the rows taken:
        a row stored without its mark would be stored again after a crash.

        The rows go in on the event loop (CPU only, ~2 us a row; a worker thread would hand
        the GIL back and forth on every row); the COMMIT, which writes the WAL and may
        checkpoint and fsync, runs in a worker thread."""
        if not self.pending and before is None:
            return
        async with self._writing:
            if before is not None:
                before()
            if not self.pending:
                return
            telemetry, self._telemetry = self._telemetry, []
            records, self._commands = self._commands, {}
            marks, self._marks = self._marks, {}
            seen, self._seen = self._seen, {}
            chunks, cuts = self.output.take()
            now = wall_ms() if now_ms is None else now_ms
            spooled = [(agent, kind, now, frame) for agent, kind, frame in telemetry]
            rows = [_command_row(record) for record in records.values()]
            mark_rows = [(agent, stream, seq, now) for agent, (stream, seq) in marks.items()]
            started = time.perf_counter()
            try:
                with self._lock:
                    self._insert(spooled, rows, mark_rows, list(seen.items()))
                    self.output.write(self._db, chunks, cuts, now)
                await self._run(self._finish)
            except sqlite3.Error as exc:
                # Keep it all for the next commit (newer writes win), and say why it failed.
                self._telemetry[:0] = telemetry
                self._commands = records | self._commands
                self._marks = marks | self._marks
                self._seen = seen | self._seen
                self.output.restore(chunks, cuts)
                raise StoreError(f"cannot write the state database {self.path}: {exc}") from None
            self.commits += 1
            if self._timed is not None:
                self._timed(time.perf_counter() - started)
            self.telemetry_bytes += sum(len(frame) for _, _, frame in telemetry)
        if self._on_commit is not None and rows:
            await self._on_commit([(row[0], row[5]) for row in rows])

    def _insert(
        self,
        telemetry: list[tuple[str, str, int, str]],
        commands: list[tuple[Any, ...]],
        marks: list[tuple[str, str, int, int]],
        seen: list[tuple[str, int]],
    ) -> None:
        db = self._db
        db.execute("BEGIN")
        try:
            db.executemany(
                "INSERT INTO telemetry (agent_id, type, received_ms, envelope) VALUES (?,?,?,?)",
                telemetry,
            )
            db.executemany("INSERT OR REPLACE INTO commands VALUES (?,?,?,?,?,?)", commands)
            db.executemany("INSERT OR REPLACE INTO delivery VALUES (?,?,?,?)", marks)
            db.executemany("INSERT OR REPLACE INTO seen VALUES (?,?)", seen)
        except BaseException:
            db.execute("ROLLBACK")
            raise

    def _finish(self) -> None:
        db = self._db
        try:
            db.execute("COMMIT")
        except BaseException:
            if db.in_transaction:  # COMMIT itself failed (busy, disk full)
                db.execute("ROLLBACK")
            raise

    # -- reads and upkeep ---------------------------------------------------------------------

    async def _run(self, fn: Callable[..., _T], *args: Any) -> _T:
        def locked() -> _T:
            with self._lock:
                return fn(*args)

        return await trio.to_thread.run_sync(locked, limiter=self._limiter)

    async def read(self, fn: Callable[..., _T], *args: Any) -> _T:
        """``fn(db, *args)`` in a worker thread, under the lock (reads of other modules)."""
        return await self._run(fn, self._db, *args)

    def load_marks(self) -> dict[str, Delivery]:
        """Every agent's stored mark (at start, before serving)."""
        with self._lock:
            rows = self._db.execute("SELECT agent_id, stream, seq FROM delivery").fetchall()
        return {agent: Delivery(stream, seq) for agent, stream, seq in rows}

    def load_seen(self) -> dict[str, int]:
        """When each agent was last connected (at start, before serving)."""
        with self._lock:
            rows = self._db.execute("SELECT agent_id, seen_ms FROM seen").fetchall()
        return dict(rows)

    def load_open_commands(self) -> list[CommandRecord]:
        """Records a previous run left queued or sent (at start, before serving)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT record FROM commands WHERE finished_ms IS NULL ORDER BY created_ms"
            ).fetchall()
        return [CommandRecord.from_json(json.loads(row[0])) for row in rows]

    async def get_command(self, command_id: str) -> CommandRecord | None:
        def read() -> Any:
            return self._db.execute(
                "SELECT record FROM commands WHERE command_id = ?", (command_id,)
            ).fetchone()

        row = await self._run(read)
        return None if row is None else CommandRecord.from_json(json.loads(row[0]))

    async def list_commands(self, query: RecordQuery) -> list[dict[str, Any]]:
        """A page of command records (JSON), newest first."""
        where, params = query.sql()

        def read() -> list[Any]:
            return self._db.execute(f"SELECT record FROM commands{where}", params).fetchall()  # noqa: S608 - only placeholders vary

        return [json.loads(row[0]) for row in await self._run(read)]

    async def history(
        self, *, after: int, limit: int, agent_id: str | None, kind: str | None, since_ms: int
    ) -> list[dict[str, Any]]:
        """``telemetry`` as the host's ``TelemetryHistory`` (``GET /api/telemetry``)."""
        return await self.telemetry(after, limit, agent_id, kind=kind, since_ms=since_ms)

    async def telemetry(
        self,
        after: int,
        limit: int,
        agent_id: str | None = None,
        *,
        kind: str | None = None,
        since_ms: int = 0,
    ) -> list[dict[str, Any]]:
        """Spooled messages with ``id > after`` (and received at ``since_ms`` or later),
        oldest first."""
        query = "SELECT id, agent_id, type, received_ms, envelope FROM telemetry WHERE id > ?"
        params: list[Any] = [after]
        for column, value in (("agent_id", agent_id), ("type", kind)):
            if value is not None:
                query += f" AND {column} = ?"
                params.append(value)
        query += " ORDER BY id LIMIT ?"
        params.append(limit)

        def read() -> list[Any]:
            if since_ms > 0:  # rows are in time order: start after the last one before it
                params[0] = max(after, last_id_before(self._db, since_ms))
            return self._db.execute(query, params).fetchall()

        return [
            {
                "id": row_id,
                "agentId": agent,
                "type": kind,
                "receivedAt": received,
                "envelope": json.loads(envelope),
            }
            for row_id, agent, kind, received, envelope in await self._run(read)
        ]

    async def prune(
        self,
        now_ms: int,
        command_retention_ms: int,
        telemetry_retention_ms: int,
        telemetry_max_bytes: int | None = None,
        output_max_bytes: int | None = None,
    ) -> int:
        """Delete finished records, spooled messages and command output past retention,
        and the oldest messages and output past their byte bounds; rows deleted."""

        def delete() -> int:  # in a worker thread, under the write lock
            db = self._db
            deleted = db.execute(
                "DELETE FROM commands WHERE finished_ms < ?", (now_ms - command_retention_ms,)
            ).rowcount
            freed, self.telemetry_bytes = prune_telemetry(
                db, now_ms - telemetry_retention_ms, telemetry_max_bytes, self.telemetry_bytes
            )
            deleted += freed
            # A command's output goes with its record.
            deleted += self.output.prune(
                db, now_ms - command_retention_ms, output_max_bytes or (1 << 62)
            )
            # A mark older than any command retention belongs to an agent long gone.
            deleted += db.execute(
                "DELETE FROM delivery WHERE updated_ms < ?", (now_ms - command_retention_ms,)
            ).rowcount
            return int(deleted)

        async with self._writing:
            return await self._run(delete)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    def counts(self) -> dict[str, int]:
        with self._lock:
            tables = ("commands", "telemetry", "delivery", "output")
            return {t: self._db.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in tables}  # noqa: S608 - fixed names


def _command_row(record: CommandRecord) -> tuple[Any, ...]:
    return (
        record.command_id,
        record.agent_id,
        record.state.value,
        record.created_ms,
        record.finished_ms,
        json.dumps(record.to_json(), separators=(",", ":")),
    )
