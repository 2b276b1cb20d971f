"""Who may open a connection: caps on unauthenticated sockets (in total and per address)
and limits on failed first frames (per address, and per address and claimed agentId).

One agent with a wrong key locks out only itself, not the other agents behind the same
address (NAT, a load balancer); an address that fails with many agent ids is limited as
a whole, at a higher threshold. Every table is bounded.
"""

from __future__ import annotations

import math
from collections import deque

from ..protocol import CloseCode

__all__ = ["FAILURE_CODES", "Admission"]

_WINDOW_S = 60.0
#: Keys (addresses, address and agent pairs) remembered at most; the oldest go first.
MAX_TRACKED = 65_536
#: What counts as a failed attempt before authentication.
FAILURE_CODES = frozenset(
    {
        CloseCode.MALFORMED,
        CloseCode.AUTH_FAILED,
        CloseCode.AGENT_MISMATCH,
        CloseCode.MESSAGE_TOO_BIG,
        CloseCode.UNSUPPORTED_DATA,
    }
)


class _Failures:
    """Failure times per key within the last minute, for at most ``MAX_TRACKED`` keys."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self._times: dict[str, deque[float]] = {}

    def add(self, key: str, now: float) -> None:
        times = self._times.pop(key, None)  # re-inserted: the dict's order is recency
        if times is None:
            times = deque(maxlen=self.limit)
            if len(self._times) >= MAX_TRACKED:
                del self._times[next(iter(self._times))]
        times.append(now)
        self._times[key] = times

    def retry_after(self, key: str, now: float) -> int | None:
        """Seconds until ``key`` may try again; None when it is under the limit."""
        times = self._times.get(key)
        if times is None:
            return None
        while times and times[0] <= now - _WINDOW_S:
            times.popleft()
        if not times:
            del self._times[key]
            return None
        if len(times) < self.limit:
            return None
        return max(1, math.ceil(times[0] + _WINDOW_S - now))


class Admission:
    """Admission bookkeeping; times are monotonic seconds, passed in.

    ``admit`` answers None (come in) or a retry hint in seconds for a 4429 close.
    """

    def __init__(
        self,
        max_unauthenticated: int,
        auth_failures_per_minute: int,
        *,
        max_unauthenticated_per_address: int | None = None,
        address_failures_per_minute: int | None = None,
    ) -> None:
        self.max_unauthenticated = max_unauthenticated
        self.max_unauthenticated_per_address = (
            max_unauthenticated_per_address or max_unauthenticated
        )
        self.unauthenticated = 0
        self._by_address: dict[str, int] = {}
        self._agent_failures = _Failures(auth_failures_per_minute)
        self._address_failures = _Failures(
            address_failures_per_minute or 10 * auth_failures_per_minute
        )

    def admit(self, address: str, now: float) -> int | None:
        """None to accept (counted as unauthenticated until ``authenticated``/``left``)."""
        retry = self._address_failures.retry_after(address, now)
        if retry is not None:
            return retry
        if self.unauthenticated >= self.max_unauthenticated:
            return 1
        if self._by_address.get(address, 0) >= self.max_unauthenticated_per_address:
            return 1
        self.unauthenticated += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        return None

    def agent_gate(self, address: str, agent_id: str, now: float) -> int | None:
        """A retry hint when this agent id, from this address, failed too often."""
        return self._agent_failures.retry_after(f"{address} {agent_id}", now)

    def authenticated(self, address: str) -> None:
        self._leave(address)

    def left_unauthenticated(
        self, address: str, agent_id: str | None, now: float, *, failed: bool
    ) -> None:
        self._leave(address)
        if failed:
            self._address_failures.add(address, now)
            if agent_id is not None:
                self._agent_failures.add(f"{address} {agent_id}", now)

    def _leave(self, address: str) -> None:
        self.unauthenticated -= 1
        left = self._by_address.get(address, 0) - 1
        if left > 0:
            self._by_address[address] = left
        else:
            self._by_address.pop(address, None)
