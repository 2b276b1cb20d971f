"""Who may open a connection: a cap on unauthenticated sockets, a limit on auth failures."""

from __future__ import annotations

import math
from collections import deque

__all__ = ["Admission"]

_WINDOW_S = 60.0


class Admission:
    """Admission bookkeeping; times are monotonic seconds, passed in.

    ``admit`` answers None (come in) or a retry hint in seconds for a 4429 close.
    """

    def __init__(self, max_unauthenticated: int, auth_failures_per_minute: int) -> None:
        self.max_unauthenticated = max_unauthenticated
        self.auth_failures_per_minute = auth_failures_per_minute
        self.unauthenticated = 0
        self._failures: dict[str, deque[float]] = {}

    def admit(self, address: str, now: float) -> int | None:
        """None to accept (counted as unauthenticated until ``authenticated``/``left``)."""
        failures = self._recent_failures(address, now)
        if failures is not None and len(failures) >= self.auth_failures_per_minute:
            return max(1, math.ceil(failures[0] + _WINDOW_S - now))
        if self.unauthenticated >= self.max_unauthenticated:
            return 1
        self.unauthenticated += 1
        return None

    def authenticated(self) -> None:
        self.unauthenticated -= 1

    def left_unauthenticated(self, address: str, now: float, *, auth_failed: bool) -> None:
        self.unauthenticated -= 1
        if auth_failed:
            failures = self._failures.get(address)
            if failures is None:
                failures = self._failures[address] = deque()
            failures.append(now)
            self._recent_failures(address, now)

    def _recent_failures(self, address: str, now: float) -> deque[float] | None:
        failures = self._failures.get(address)
        if failures is None:
            return None
        while failures and failures[0] <= now - _WINDOW_S:
            failures.popleft()
        if not failures:
            del self._failures[address]
            return None
        return failures
