"""When to reconnect: exponential backoff with full jitter, and the server's retry hints."""

from __future__ import annotations

import random

import attrs

from ..protocol import CloseCode, parse_retry_after

__all__ = ["Backoff"]

#: An authentication failure is not fixed by retrying quickly: wait at least this long.
AUTH_FAILED_FLOOR_S = 30.0


@attrs.define
class Backoff:
    """Delays between connection attempts (plain state, no clock).

    ``attempt`` counts failures since the last stable connection; ``stable`` resets it.
    """

    base_s: float = 1.0
    cap_s: float = 60.0
    rng: random.Random = attrs.field(factory=random.Random, repr=False)
    attempt: int = 0

    def stable(self) -> None:
        """The connection stayed up long enough: start over at the base delay."""
        self.attempt = 0

    def next_delay(self, code: int | None = None, reason: str = "") -> float:
        """Seconds to wait after a connection ended with ``code``/``reason``."""
        ceiling = min(self.cap_s, self.base_s * 2**self.attempt)
        self.attempt += 1
        delay = self.rng.uniform(0, ceiling)  # full jitter: spreads a reconnect storm
        hint = parse_retry_after(reason)
        if hint is not None:
            # The server said when: not before, plus jitter so a fleet does not return at once.
            delay = hint + self.rng.uniform(0, max(1.0, hint * 0.5))
        if code == CloseCode.AUTH_FAILED:
            delay = max(delay, AUTH_FAILED_FLOOR_S + self.rng.uniform(0, AUTH_FAILED_FLOOR_S))
        return delay
