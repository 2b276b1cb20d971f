"""The replay window: each (agentId, nonce) is accepted once while its ``ts`` is fresh."""

from __future__ import annotations

import enum
from typing import Protocol

from .envelope import TIMESTAMP_WINDOW_MS

__all__ = ["MemoryReplayWindow", "ReplayVerdict", "ReplayWindow"]


class ReplayVerdict(enum.Enum):
    """What the window says of a message."""

    NEW = "new"  # first sighting: process it
    DUPLICATE = "duplicate"  # seen within the window: drop it without effect
    STALE = "stale"  # ts outside the window: it cannot be checked, refuse it
    UNAVAILABLE = "unavailable"  # a shared window cannot answer: try again later (1013)


class ReplayWindow(Protocol):
    """Remembers nonces per agent until ``ts + window``.

    A shared implementation (Redis, for several nodes) fills the same contract with an
    atomic set-if-absent with expiry; sessions take its verdict through
    ``ServerSession.accept`` so the check may happen outside the sans-IO core.
    """

    def check(self, agent_id: str, nonce: str, ts_ms: int, now_ms: int) -> ReplayVerdict:
        """NEW and remembered, DUPLICATE, or STALE (and not remembered)."""
        ...


class MemoryReplayWindow:
    """The single-node window: about 80 bytes per remembered nonce.

    A nonce is stored as the 64-bit process-salted ``hash((agentId, nonce))``; a
    collision (about 3e-8 at a million nonces in the window) can only make a message
    look like a duplicate, never let one through twice. Nonces are evicted in buckets of
    one second, at most a second after ``ts + window``.
    """

    __slots__ = ("_buckets", "_cursor", "_seen", "window_ms")

    def __init__(self, window_ms: int = TIMESTAMP_WINDOW_MS) -> None:
        self.window_ms = window_ms
        self._seen: set[int] = set()
        self._buckets: dict[int, list[int]] = {}  # expiry second -> hashes
        self._cursor: int | None = None  # next expiry second to evict

    def __len__(self) -> int:
        return len(self._seen)

    def check(self, agent_id: str, nonce: str, ts_ms: int, now_ms: int) -> ReplayVerdict:
        """See ``ReplayWindow.check``."""
        if abs(now_ms - ts_ms) > self.window_ms:
            return ReplayVerdict.STALE
        self.evict(now_ms)
        digest = hash((agent_id, nonce))
        seen = self._seen
        if digest in seen:
            return ReplayVerdict.DUPLICATE
        seen.add(digest)
        expiry = (ts_ms + self.window_ms) // 1000 + 1
        cursor = self._cursor
        if cursor is None or expiry < cursor:
            # Keep the cursor at or before every bucket so none is left behind.
            self._cursor = expiry
        bucket = self._buckets.get(expiry)
        if bucket is None:
            self._buckets[expiry] = [digest]
        else:
            bucket.append(digest)
        return ReplayVerdict.NEW

    def evict(self, now_ms: int) -> None:
        """Forget every nonce whose ``ts + window`` has passed."""
        cursor = self._cursor
        now_s = now_ms // 1000
        if cursor is None or cursor > now_s:
            return
        buckets = self._buckets
        if now_s - cursor > len(buckets):  # a long gap: walk the buckets, not the seconds
            expired = [second for second in buckets if second <= now_s]
        else:
            expired = [second for second in range(cursor, now_s + 1) if second in buckets]
        for second in expired:
            self._seen.difference_update(buckets.pop(second))
        self._cursor = min(buckets) if buckets else None
