"""The host's record of commands carried by transports that keep none of their own (SSM,
plugins' transports): one SQLite file beside the other state, bounded by age and count."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import trio

from ..clock import wall_ms
from ..private import private_sqlite
from ..protocol import CommandError, CommandResult
from ..transports import CommandOrder, CommandOutcome, CommandTimeoutError, TransportError
from ..transports.records import CommandRecord, CommandState, RecordQuery

__all__ = ["CommandLog", "ended_record"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS commands (
    command_id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS commands_created_id ON commands (created_ms, command_id);
"""


class CommandLog:
    """Finished commands of record-less transports; ``path`` None keeps them in memory."""

    def __init__(
        self, path: Path | None, *, retention_ms: int = 7 * 86_400_000, max_rows: int = 100_000
    ) -> None:
        self.retention_ms, self.max_rows = retention_ms, max_rows
        self._db = private_sqlite(path, _SCHEMA)
        self._lock = threading.Lock()
        self._writes = 0

    async def record(self, record: CommandRecord) -> None:
        """Keep a finished command's record (``ended_record`` makes one)."""
        row = (record.command_id, record.created_ms, json.dumps(record.to_json()))
        await trio.to_thread.run_sync(self._write, row)

    def _write(self, row: tuple[str, int, str]) -> None:
        with self._lock:
            self._db.execute("INSERT OR REPLACE INTO commands VALUES (?, ?, ?)", row)
            self._writes += 1
            if self._writes % 1000 == 1:
                self._prune()

    def _prune(self) -> None:
        self._db.execute(
            "DELETE FROM commands WHERE created_ms < ?", (wall_ms() - self.retention_ms,)
        )
        self._db.execute(
            "DELETE FROM commands WHERE command_id IN (SELECT command_id FROM commands "
            "ORDER BY created_ms DESC LIMIT -1 OFFSET ?)",
            (self.max_rows,),
        )

    async def get(self, command_id: str) -> CommandRecord | None:
        def read() -> Any:
            with self._lock:
                return self._db.execute(
                    "SELECT record FROM commands WHERE command_id = ?", (command_id,)
                ).fetchone()

        row = await trio.to_thread.run_sync(read)
        return None if row is None else CommandRecord.from_json(json.loads(row[0]))

    async def list(self, query: RecordQuery) -> list[dict[str, Any]]:
        """A page of the log's records (JSON), newest first."""
        where, params = query.sql()

        def read() -> list[Any]:
            with self._lock:
                sql = f"SELECT record FROM commands{where}"  # noqa: S608 - only placeholders vary
                return self._db.execute(sql, params).fetchall()

        return [json.loads(row[0]) for row in await trio.to_thread.run_sync(read)]

    def close(self) -> None:
        with self._lock:
            self._db.close()


def ended_record(
    transport: str,
    order: CommandOrder,
    *,
    created_ms: int,
    answer: CommandOutcome | TransportError,
) -> CommandRecord:
    """The record of an order ``transport`` carried: its outcome, or the failure."""
    now = wall_ms()
    if isinstance(answer, CommandOutcome):
        command_id = answer.command_id
    else:
        command_id = getattr(answer, "command_id", None) or str(uuid.uuid4())
    record = CommandRecord(
        command_id=command_id,
        agent_id=order.agent_id,
        command=order.command,
        args=dict(order.args),
        timeout_ms=order.timeout_ms,
        transport=transport,
        requested_by=order.requester,
        created_ms=created_ms,
        sent_ms=created_ms,
        attempts=1,
    )
    if isinstance(answer, CommandOutcome):
        error = None
        if answer.error_code is not None:
            error = CommandError(answer.error_code, answer.error_message or "")
        result = CommandResult(command_id, answer.ok, answer.duration_ms, answer.result, error)
        record.answered(result, now)
    elif isinstance(answer, CommandTimeoutError):
        record.finish(CommandState.TIMED_OUT, now)
    else:
        failure = CommandError(answer.code, str(answer))
        record.result = CommandResult(command_id, False, now - created_ms, error=failure)
        record.finish(CommandState.FAILED, now)
    return record
