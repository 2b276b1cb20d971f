"""Files only their owner may read: state databases, outboxes, keys, secrets."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from pathlib import Path

__all__ = ["private_file", "private_sqlite", "write_private"]

#: SQLite's companions of a database file (created with the database file's mode).
_COMPANIONS = ("-wal", "-shm", "-journal")


def private_file(path: Path) -> None:
    """Create ``path`` (and missing parents, 0700) as an empty 0600 file, or tighten an
    existing one and its SQLite companions to 0600: they hold command output and logs.

    An existing file is never opened: closing any descriptor of a file drops every POSIX
    lock this process holds on it, which would pull the locks from under a SQLite
    connection that another thread holds open. Raises OSError when the directory or the
    file cannot be made."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    try:
        os.chmod(path, 0o600)
    except FileNotFoundError:
        fd = os.open(path, os.O_CREAT | os.O_RDWR | os.O_CLOEXEC, 0o600)
        try:
            os.fchmod(fd, 0o600)
        finally:
            os.close(fd)
    for suffix in _COMPANIONS:
        with contextlib.suppress(FileNotFoundError):
            os.chmod(f"{path}{suffix}", 0o600)


def write_private(path: Path, text: str) -> None:
    """Write a file only its owner can read (it holds a key). An existing file is
    tightened to 0600 before a byte is written (``O_CREAT``'s mode applies only to a new
    one: a 0644 file would otherwise hold the key world-readable)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
    try:
        os.fchmod(fd, 0o600)
    except OSError:
        os.close(fd)
        raise
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(text)


def private_sqlite(path: Path | None, schema: str) -> sqlite3.Connection:
    """A SQLite database only its owner may read (``path`` None: in memory), with
    ``schema`` made, in autocommit mode, usable from worker threads (callers lock)."""
    if path is not None:
        private_file(path)
    db = sqlite3.connect(
        ":memory:" if path is None else str(path), check_same_thread=False, isolation_level=None
    )
    db.executescript(schema)
    return db
