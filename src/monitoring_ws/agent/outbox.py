"""The agent's outbox and command journal, in one SQLite file (docs/agent.md, "Outbox").

Every metrics sample, log batch and command result gets the next ``seq`` of the outbox's
``stream`` and stays until the server acknowledges it (``ack`` extension) or, with a server
that does not speak ``ack``, until it is sent. Bounded by bytes and by age: past either
bound the oldest go first, counted and logged. The journal remembers which ``commandId``s
this agent has started, across restarts, so a command sent again never runs twice.

WAL with ``synchronous=NORMAL``: what was written survives the agent being killed; a power
cut can lose the last writes.
"""

from __future__ import annotations

import json
import logging
import sqlite3
import threading
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import trio

from ..clock import wall_ms
from ..private import private_file
from ..protocol import Delivery, MessageType

__all__ = ["JOURNAL_KEEP_MS", "Outbox", "OutboxError", "Pending"]

log = logging.getLogger("monitoring_ws.agent")
#: Started commands are remembered this long (longer than any command timeout).
JOURNAL_KEEP_MS = 7 * 86_400_000
_DROP_LOG_EVERY_MS = 60_000
#: Messages put by this process are kept decoded too, up to this many bytes, so that the
#: sender does not parse back what it just wrote (a chunk of output is 64 KiB of JSON).
_DECODED_BYTES = 16 << 20
_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    size INTEGER NOT NULL
);
CREATE INDEX IF NOT EXISTS outbox_created ON outbox (created_ms);
CREATE TABLE IF NOT EXISTS journal (
    command_id TEXT PRIMARY KEY,
    state TEXT NOT NULL,
    at_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS intent_nonces (
    nonce TEXT PRIMARY KEY,
    command_id TEXT NOT NULL,
    until_ms INTEGER NOT NULL
);
"""

Pending = tuple[int, MessageType, dict[str, Any]]
_OUTPUT = MessageType.COMMAND_OUTPUT.value


class OutboxError(Exception):
    """The outbox file cannot be opened; the message says what to fix."""


class Outbox:
    """Numbered messages waiting for the server, and the command journal."""

    def __init__(self, path: Path | None, *, max_bytes: int, max_age_s: float) -> None:
        self.path = path
        self.max_bytes = max_bytes
        self.max_age_ms = int(max_age_s * 1000)
        #: Set when something is put; the sender waits on it.
        self.wake = trio.Event()
        #: Messages dropped by the bounds, since start.
        self.dropped = 0
        self._lock = threading.Lock()  # logging may put from a worker thread
        self._db = self._open()
        row = self._db.execute("SELECT value FROM meta WHERE key = 'stream'").fetchone()
        if row is None:
            # A new outbox is a new stream: the server starts counting it afresh.
            self.stream = f"s-{uuid.uuid4()}"
            self._db.execute("INSERT INTO meta VALUES ('stream', ?)", (self.stream,))
        else:
            self.stream = str(row[0])
        self.bytes = int(
            self._db.execute("SELECT coalesce(sum(size), 0) FROM outbox").fetchone()[0]
        )
        #: Of those, the bytes of command output (a command waits while there is too much).
        self.output_bytes = int(
            self._db.execute(
                "SELECT coalesce(sum(size), 0) FROM outbox WHERE kind = ?", (_OUTPUT,)
            ).fetchone()[0]
        )
        self._forgotten = trio.Event()
        #: Everything up to here is gone from the outbox (acknowledged, or sent unnumbered).
        self.acked_through = 0
        self._last_drop_log_ms = 0
        self._next_age_check_ms = 0
        self._decoded: dict[int, tuple[MessageType, dict[str, Any], int]] = {}
        self._decoded_bytes = 0
        self._dropped_since_log = 0

    def _open(self) -> sqlite3.Connection:
        target = ":memory:" if self.path is None else str(self.path)
        try:
            if self.path is not None:
                private_file(self.path)
            db = sqlite3.connect(target, check_same_thread=False, isolation_level=None)
            db.execute("PRAGMA journal_mode=WAL")
            db.execute("PRAGMA synchronous=NORMAL")
            db.executescript(_SCHEMA)
        except (OSError, sqlite3.Error) as exc:
            raise OutboxError(
                f"cannot open the agent's outbox {target}: {exc} "
                "(set stateDir / --state-dir to a writable directory)"
            ) from None
        return db

    def __len__(self) -> int:
        with self._lock:
            return int(self._db.execute("SELECT count(*) FROM outbox").fetchone()[0])

    # -- the outbox ---------------------------------------------------------------------------

    def put(self, kind: MessageType, payload: Mapping[str, Any]) -> int:
        """Keep a message; its ``seq``. Older messages go if a bound is passed."""
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        now = wall_ms()
        with self._lock:
            cursor = self._db.execute(
                "INSERT INTO outbox (kind, payload, created_ms, size) VALUES (?,?,?,?)",
                (kind.value, text, now, len(text)),
            )
            self.bytes += len(text)
            if kind is MessageType.COMMAND_OUTPUT:
                self.output_bytes += len(text)
            seq = int(cursor.lastrowid or 0)
            if self._decoded_bytes + len(text) <= _DECODED_BYTES:
                self._decoded[seq] = (kind, dict(payload), len(text))
                self._decoded_bytes += len(text)
            dropped = self._enforce_bounds(now)
        self.wake.set()
        if dropped:
            self._log_drops(dropped, now)
        return seq

    def _enforce_bounds(self, now_ms: int) -> int:
        db, dropped = self._db, 0
        if now_ms >= self._next_age_check_ms:  # the bound is days: a look a second will do
            self._next_age_check_ms = now_ms + 1000
            # By the index: a scan would read every row's payload (created_ms comes after it).
            too_old = db.execute(
                "DELETE FROM outbox WHERE created_ms < ? RETURNING size, kind, seq",
                (now_ms - self.max_age_ms,),
            ).fetchall()
            dropped += len(too_old)
            self._removed(too_old)
        while self.bytes > self.max_bytes:
            oldest = db.execute("SELECT seq, size FROM outbox ORDER BY seq LIMIT 64").fetchall()
            if len(oldest) <= 1:  # never drop the message just put
                break
            cut, freed = 0, 0
            for seq, size in oldest[:-1]:
                cut, freed = seq, freed + size
                if self.bytes - freed <= self.max_bytes:
                    break
            removed = db.execute(
                "DELETE FROM outbox WHERE seq <= ? RETURNING size, kind, seq", (cut,)
            ).fetchall()
            dropped += len(removed)
            self._removed(removed)
        self.dropped += dropped
        return dropped

    def _removed(self, rows: list[tuple[int, str, int]]) -> None:
        """Rows deleted: their bytes, and their decoded copies."""
        self.bytes -= sum(size for size, _, _ in rows)
        self.output_bytes -= sum(size for size, kind, _ in rows if kind == _OUTPUT)
        for _, _, seq in rows:
            entry = self._decoded.pop(seq, None)
            if entry is not None:
                self._decoded_bytes -= entry[2]

    def forgotten_event(self) -> trio.Event:
        """Set the next time messages leave the outbox (command output waits on it)."""
        return self._forgotten

    def _log_drops(self, dropped: int, now_ms: int) -> None:
        self._dropped_since_log += dropped
        if now_ms - self._last_drop_log_ms >= _DROP_LOG_EVERY_MS:
            log.warning(
                "outbox bound reached (%d bytes, %d s): dropped the %d oldest messages "
                "(%d since start)",
                self.max_bytes,
                self.max_age_ms // 1000,
                self._dropped_since_log,
                self.dropped,
            )
            self._last_drop_log_ms, self._dropped_since_log = now_ms, 0

    def after(self, seq: int, limit: int = 100) -> list[Pending]:
        """Up to ``limit`` messages numbered above ``seq``, in order (each a new dict)."""
        decoded = self._decoded
        with self._lock:
            numbers = [
                number
                for (number,) in self._db.execute(
                    "SELECT seq FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?", (seq, limit)
                )
            ]
            if all(number in decoded for number in numbers):
                return [(n, decoded[n][0], dict(decoded[n][1])) for n in numbers]
            # Some were put by an earlier run: read the payloads in one go.
            rows = self._db.execute(
                "SELECT seq, kind, payload FROM outbox WHERE seq > ? ORDER BY seq LIMIT ?",
                (seq, limit),
            ).fetchall()
        return [
            (n, decoded[n][0], dict(decoded[n][1]))
            if n in decoded
            else (n, MessageType(kind), json.loads(payload))
            for n, kind, payload in rows
        ]

    def replace(self, seq: int, kind: MessageType, payload: Mapping[str, Any]) -> None:
        """Put ``payload`` in place of message ``seq`` (same number, same place in line)."""
        text = json.dumps(payload, separators=(",", ":"), ensure_ascii=False)
        with self._lock:
            row = self._db.execute("SELECT size, kind FROM outbox WHERE seq = ?", (seq,)).fetchone()
            if row is None:
                return
            self._db.execute(
                "UPDATE outbox SET kind = ?, payload = ?, size = ? WHERE seq = ?",
                (kind.value, text, len(text), seq),
            )
            self._removed([(int(row[0]), str(row[1]), seq)])
            self.bytes += len(text)
            if kind is MessageType.COMMAND_OUTPUT:
                self.output_bytes += len(text)

    def delivery(self, seq: int) -> Delivery:
        return Delivery(self.stream, seq)

    def acknowledged(self, ack: Delivery) -> int:
        """The server stored everything up to ``ack.seq``: forget it. Rows removed."""
        if ack.stream != self.stream:
            return 0  # about an outbox this agent no longer has
        return self.forget_through(ack.seq)

    def forget_through(self, seq: int) -> int:
        self.acked_through = max(self.acked_through, seq)
        with self._lock:
            removed = self._db.execute(
                "DELETE FROM outbox WHERE seq <= ? RETURNING size, kind, seq", (seq,)
            ).fetchall()
            self._removed(removed)
        if removed:
            self._forgotten.set()
            self._forgotten = trio.Event()
        return len(removed)

    # -- the command journal --------------------------------------------------------------

    def start_command(self, command_id: str) -> bool:
        """Record that ``command_id`` starts; False if this agent has seen it before."""
        with self._lock:
            cursor = self._db.execute(
                "INSERT OR IGNORE INTO journal VALUES (?, 'running', ?)", (command_id, wall_ms())
            )
        return cursor.rowcount == 1

    def finish_command(self, command_id: str) -> None:
        with self._lock:
            self._db.execute(
                "UPDATE journal SET state = 'done', at_ms = ? WHERE command_id = ?",
                (wall_ms(), command_id),
            )

    def claim_nonce(self, nonce: str, command_id: str, until_ms: int, now_ms: int) -> bool:
        """Record that operator intent ``nonce`` is used by ``command_id`` (kept until
        ``until_ms``); False if another command used it (a replay). Expired ones go first:
        an intent past its window is refused before its nonce is looked at."""
        with self._lock:
            self._db.execute("DELETE FROM intent_nonces WHERE until_ms < ?", (now_ms,))
            self._db.execute(
                "INSERT OR IGNORE INTO intent_nonces VALUES (?, ?, ?)",
                (nonce, command_id, until_ms),
            )
            row = self._db.execute(
                "SELECT command_id FROM intent_nonces WHERE nonce = ?", (nonce,)
            ).fetchone()
        return row is not None and row[0] == command_id

    def interrupted_commands(self) -> list[str]:
        """Commands a previous run started and never finished (marked done now)."""
        with self._lock:
            self._db.execute("DELETE FROM journal WHERE at_ms < ?", (wall_ms() - JOURNAL_KEEP_MS,))
            rows = self._db.execute(
                "UPDATE journal SET state = 'done' WHERE state = 'running' RETURNING command_id"
            ).fetchall()
        return sorted(command_id for (command_id,) in rows)

    def close(self) -> None:
        with self._lock:
            self._db.close()
