"""A per-agent rate limit on messages and bytes: two token buckets (no I/O; time passed in).

Defaults sit far above a normal agent (a metrics sample every few seconds, log batches,
heartbeats) and leave room for an outbox replayed after an outage; past them the server
closes with 4429 and a retry hint, which agents honour (docs/protocol.md).
"""

from __future__ import annotations

import math

import attrs

__all__ = ["RateLimit", "RateMeter", "WorkBudget"]


@attrs.frozen
class RateLimit:
    """Sustained rates, and how many seconds' worth may come at once."""

    messages_per_s: float = 1000.0
    bytes_per_s: float = float(8 << 20)
    burst_s: float = 10.0


class RateMeter:
    """One agent's two buckets, full at the start."""

    __slots__ = ("_bytes", "_limit", "_messages", "_updated_ms")

    def __init__(self, limit: RateLimit, now_ms: int) -> None:
        self._limit = limit
        self._messages = limit.messages_per_s * limit.burst_s
        self._bytes = limit.bytes_per_s * limit.burst_s
        self._updated_ms = now_ms

    def take(self, size: int, now_ms: int) -> int | None:
        """Charge one message of ``size`` bytes; None if allowed, else seconds to wait
        before the buckets hold it again (the message is not charged then)."""
        limit = self._limit
        elapsed = max(0, now_ms - self._updated_ms) / 1000
        self._updated_ms = now_ms
        messages = min(
            limit.messages_per_s * limit.burst_s, self._messages + elapsed * limit.messages_per_s
        )
        size_tokens = min(
            limit.bytes_per_s * limit.burst_s, self._bytes + elapsed * limit.bytes_per_s
        )
        if messages >= 1 and size_tokens >= size:
            self._messages, self._bytes = messages - 1, size_tokens - size
            return None
        self._messages, self._bytes = messages, size_tokens
        wait = max((1 - messages) / limit.messages_per_s, (size - size_tokens) / limit.bytes_per_s)
        return max(1, math.ceil(wait))

    def refund(self, size: int) -> None:
        """Give back the bytes of a message another budget pays for (its count stays)."""
        limit = self._limit
        self._bytes = min(limit.bytes_per_s * limit.burst_s, self._bytes + size)


class WorkBudget:
    """Time spent on one agent's frames: a bucket of ``burst_s`` that fills at ``per_s``
    seconds a second. Work is charged after it is done (its cost is known only then) and
    may take the bucket below zero; the shell then stops reading the agent until the debt
    is repaid, so its share of the server stays ``per_s`` however costly its frames."""

    __slots__ = ("_level", "_updated_ms", "burst_s", "per_s")

    def __init__(self, per_s: float, burst_s: float, now_ms: int) -> None:
        self.per_s, self.burst_s = per_s, burst_s
        self._level = burst_s
        self._updated_ms = now_ms

    def charge(self, seconds: float, now_ms: int) -> float:
        """Charge ``seconds`` of work; how long to wait before reading more (0: at once)."""
        elapsed = max(0, now_ms - self._updated_ms) / 1000
        self._updated_ms = now_ms
        self._level = min(self.burst_s, self._level + elapsed * self.per_s) - seconds
        return 0.0 if self._level >= 0 else -self._level / self.per_s
