"""The audit log: append-only JSON lines of what was asked of the server and what it
refused (docs/operations.md, "Audit log"). Commands, cancels, other writes, refused
requests (401, 403), agents' failed signatures, reloads; tokens by name, never the token.

``record`` never waits: lines go through a bounded queue to a writer task (dropped lines
are counted and said in the next line written). Refusals an attacker can cause at will are
``noisy``: at most ``NOISY_PER_S`` lines a second per event, the rest counted.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, deque
from pathlib import Path
from typing import Any

import trio

from .jsonlines import RotatingJsonLines

__all__ = ["AuditLog"]

log = logging.getLogger("monitoring_ws.audit")

#: Lines a second, per noisy event, before the rest are only counted.
NOISY_PER_S = 10
QUEUE_LIMIT = 10_000


class AuditLog:
    """One server's audit log; ``path`` None keeps nothing (tests that do not look)."""

    def __init__(self, path: Path | None, *, max_bytes: int = 64 << 20, backups: int = 5) -> None:
        self.file = (
            None if path is None else RotatingJsonLines(path, max_bytes=max_bytes, backups=backups)
        )
        self._lines: deque[dict[str, Any]] = deque()
        self._ready = trio.Event()
        self._writing = False
        self.dropped = 0
        self._noisy: dict[str, tuple[int, int]] = {}  # event -> (second, lines in it)
        self._suppressed: Counter[str] = Counter()

    def record(self, event: str, **fields: Any) -> None:
        """Queue one line: ``{"ts": ms, "event": ..., **fields}``."""
        if self.file is None:
            return
        if len(self._lines) >= QUEUE_LIMIT:
            self.dropped += 1
            return
        line: dict[str, Any] = {"ts": int(time.time() * 1000), "event": event, **fields}
        if self._suppressed[event]:
            line["suppressedBefore"] = self._suppressed.pop(event)
        self._lines.append(line)
        self._ready.set()

    def noisy(self, event: str, **fields: Any) -> None:
        """``record``, at most ``NOISY_PER_S`` times a second for this event."""
        second = int(time.monotonic())
        start, count = self._noisy.get(event, (second, 0))
        if start != second:
            start, count = second, 0
        if count >= NOISY_PER_S:
            self._suppressed[event] += 1
            return
        self._noisy[event] = (start, count + 1)
        self.record(event, **fields)

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Write queued lines until cancelled."""
        task_status.started()
        if self.file is None:
            return
        while True:
            if not self._lines:
                self._ready = trio.Event()
                await self._ready.wait()
            batch = list(self._lines)
            self._lines.clear()
            if self.dropped:
                batch.append({"ts": batch[-1]["ts"], "event": "dropped", "lines": self.dropped})
                self.dropped = 0
            self._writing = True
            try:
                await trio.to_thread.run_sync(self.file.append, batch)
            except OSError as exc:
                log.error("cannot write the audit log %s: %s", self.file.path, exc)  # noqa: TRY400
            finally:
                self._writing = False

    async def flush(self, timeout_s: float) -> None:
        """Wait (bounded) until what was recorded is written."""
        with trio.move_on_after(timeout_s):
            while self._lines or self._writing:
                await trio.sleep(0.01)
