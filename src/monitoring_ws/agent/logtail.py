"""Tails the configured log files into ``log`` messages (follows rotation and truncation)."""

from __future__ import annotations

import os
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import trio

from ..protocol import MessageType
from .settings import AgentSettings

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = ["LogTail", "TailedFile"]

#: Lines per ``log`` message at most; a longer line is cut to ``MAX_LINE`` characters.
MAX_BATCH = 500
MAX_LINE = 16_384
MAX_BATCH_BYTES = 256 << 10


class TailedFile:
    """One file's read position; starts at the end, like ``tail -F``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._inode: int | None = None
        self._offset = 0
        self._partial = b""
        self._last_byte: bytes | None = None
        try:
            stat = path.stat()
            self._inode, self._offset = stat.st_ino, stat.st_size
            if stat.st_size:
                with path.open("rb") as handle:
                    handle.seek(stat.st_size - 1)
                    self._last_byte = handle.read(1)
        except OSError:
            pass

    def read_lines(self) -> list[str]:
        """Complete lines written since the last call."""
        try:
            stat = self.path.stat()
        except OSError:
            return []  # rotated away and not yet recreated
        if stat.st_ino != self._inode:  # rotated: a new file, read it from the start
            self._inode, self._offset, self._partial = stat.st_ino, 0, b""
        elif stat.st_size < self._offset:  # truncated in place
            self._offset, self._partial = 0, b""
        with self.path.open("rb") as handle:
            if self._offset and self._last_byte is not None:
                # Truncated and rewritten past our offset already: the byte before the
                # offset is no longer the one we read there.
                handle.seek(self._offset - 1)
                if handle.read(1) != self._last_byte:
                    self._offset, self._partial = 0, b""
            if stat.st_size == self._offset:
                return []
            handle.seek(self._offset)
            data = handle.read(8 << 20)
        if not data:
            return []
        self._offset += len(data)
        self._last_byte = data[-1:]
        chunks = (self._partial + data).split(b"\n")
        self._partial = chunks.pop()
        return [chunk.decode("utf-8", "replace")[:MAX_LINE] for chunk in chunks]


class LogTail:
    """Polls every configured file and queues what is new."""

    def __init__(self, settings: AgentSettings, outbox: Outbox) -> None:
        self.settings = settings
        self.outbox = outbox
        self.files = [TailedFile(path) for path in settings.log_files]

    async def run(self) -> None:
        while True:
            await trio.sleep(self.settings.log_batch_interval_s)
            for tailed in self.files:
                lines = await trio.to_thread.run_sync(tailed.read_lines)
                for chunk in _chunks(lines):
                    self.outbox.put(MessageType.LOG, _batch(tailed.path, chunk))


def _chunks(lines: list[str]) -> list[list[str]]:
    """Batches of at most ``MAX_BATCH`` lines and about ``MAX_BATCH_BYTES`` of text, so
    that a batch stays far below any frame limit."""
    chunks: list[list[str]] = [[]]
    size = 0
    for line in lines:
        cost = len(line) * 2 + 64  # escapes and the entry's other members, roughly
        if chunks[-1] and (len(chunks[-1]) >= MAX_BATCH or size + cost > MAX_BATCH_BYTES):
            chunks.append([])
            size = 0
        chunks[-1].append(line)
        size += cost
    return chunks if chunks[0] else []


def _batch(path: Path, lines: list[str]) -> dict[str, Any]:
    ts = time.time_ns() // 1_000_000
    source = os.fspath(path)
    return {
        "entries": [
            {"ts": ts, "level": "info", "message": line, "source": source} for line in lines
        ]
    }
