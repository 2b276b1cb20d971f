"""The replay window shared by every node: a nonce accepted on one is a duplicate on all.

Each check is ``SET {prefix}{agentId}:{nonce} 1 NX PXAT ts+window``: atomic, and Redis
forgets the nonce when the message could no longer be fresh. The node's own in-memory
window answers first (a re-send to the same node never costs a round trip) and stands in
while Redis is unreachable, so agents on this node keep working; cross-node replay
protection is then only as good as each node's own memory, which is logged.
"""

from __future__ import annotations

import logging
import time
from typing import Any

import attrs
import coredis
import trio
from coredis.exceptions import RedisError
from coredis.tokens import PureToken

from ..protocol import TIMESTAMP_WINDOW_MS, MemoryReplayWindow, ReplayVerdict
from .throttle import Throttle

__all__ = ["RedisReplayWindow"]

log = logging.getLogger("monitoring_ws.cluster")
#: How long a check may wait for Redis before the local window decides alone.
REDIS_TIMEOUT_S = 0.5
#: Checks per script call (one Redis command) at most.
MAX_BATCH = 1000
# SET NX PXAT for each key; 1 where it was new. One node's keys, on one Redis (not a
# Redis Cluster, where the keys of one script must share a slot).
_SET_MANY = """
local out = {}
for i, key in ipairs(KEYS) do
  if redis.call('SET', key, '1', 'NX', 'PXAT', ARGV[i]) then out[i] = 1 else out[i] = 0 end
end
return out
"""


@attrs.define
class _Check:
    key: str
    expires_at_ms: int
    done: trio.Event = attrs.field(factory=trio.Event)
    verdict: ReplayVerdict = ReplayVerdict.NEW


class RedisReplayWindow:
    """An asynchronous ``ReplayWindow`` (``await check(...)``), for ``Gateway(shared_replay=)``.

    ``client`` must be open (``async with client``) for as long as the window is used.
    While ``run`` runs, the checks of all connections that arrive together go to Redis as
    one script call (one round trip, one command, whatever their number); without it each
    check is its own ``SET``.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        window_ms: int = TIMESTAMP_WINDOW_MS,
        prefix: str = "mws:nonce:",
        fail_open_s: float = 30.0,
        timeout_s: float = REDIS_TIMEOUT_S,
    ) -> None:
        self.client = client
        #: How long a check waits for Redis before the local window decides alone.
        self.timeout_s = timeout_s
        self.window_ms = window_ms
        #: For how long after Redis stops answering this node's own window decides alone
        #: (counted in ``unshared``); after that checks fail closed (1013). 0: at once.
        self.fail_open_s = fail_open_s
        self._failing_since: float | None = None
        self.prefix = prefix
        self.local = MemoryReplayWindow(window_ms)
        #: Checks Redis could not answer (the local window decided alone).
        self.unshared = 0
        #: Checks refused because Redis had been away longer than ``fail_open_s``.
        self.refused = 0
        self._warning = Throttle()
        self._script = client.register_script(_SET_MANY)
        self._pending: list[_Check] | None = None
        self._wake = trio.Event()

    async def check(self, agent_id: str, nonce: str, ts_ms: int, now_ms: int) -> ReplayVerdict:
        """NEW (and remembered on every node), DUPLICATE, or STALE."""
        verdict = self.local.check(agent_id, nonce, ts_ms, now_ms)
        if verdict is not ReplayVerdict.NEW:
            return verdict
        key, expires_at = f"{self.prefix}{agent_id}:{nonce}", ts_ms + self.window_ms
        pending = self._pending
        if pending is None:
            return await self._check_one(key, expires_at)
        check = _Check(key, expires_at)
        pending.append(check)
        self._wake.set()
        await check.done.wait()
        return check.verdict

    async def _check_one(self, key: str, expires_at_ms: int) -> ReplayVerdict:
        try:
            with trio.fail_after(self.timeout_s):
                stored = await self.client.set(key, "1", condition=PureToken.NX, pxat=expires_at_ms)
        except (RedisError, OSError, trio.TooSlowError) as exc:
            return self._unshared(exc)
        self._failing_since = None
        return ReplayVerdict.NEW if stored else ReplayVerdict.DUPLICATE

    async def run(self) -> None:
        """Send the checks in batches until cancelled."""
        self._pending = []
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._pending:
                    batch = self._pending[:MAX_BATCH]
                    del self._pending[:MAX_BATCH]
                    await self._check_many(batch)
        finally:
            leftover, self._pending = self._pending or [], None
            for check in leftover:  # cancelled: the local window has already decided
                check.done.set()

    async def _check_many(self, batch: list[_Check]) -> None:
        try:
            with trio.fail_after(self.timeout_s):
                stored: Any = await self._script(
                    keys=[check.key for check in batch],
                    args=[check.expires_at_ms for check in batch],
                )
            for check, new in zip(batch, stored, strict=True):
                check.verdict = ReplayVerdict.NEW if new else ReplayVerdict.DUPLICATE
            self._failing_since = None
        except (RedisError, OSError, trio.TooSlowError, ValueError) as exc:
            verdict = self._unshared(exc)
            for check in batch:
                check.verdict = verdict
        for check in batch:
            check.done.set()

    def _unshared(self, exc: BaseException) -> ReplayVerdict:
        """The verdict when Redis did not answer: the local window's (NEW), while the
        outage is younger than ``fail_open_s``; UNAVAILABLE after."""
        now = time.monotonic()
        if self._failing_since is None:
            self._failing_since = now
        if now - self._failing_since >= self.fail_open_s:
            self.refused += 1
            self._warn(exc)
            return ReplayVerdict.UNAVAILABLE
        self.unshared += 1
        self._warn(exc)
        return ReplayVerdict.NEW

    def _warn(self, exc: BaseException) -> None:
        if self._warning.due():
            log.warning(
                "Redis did not answer a nonce check (%s: %s); this node's own window decides "
                "for the first %g s of an outage, then frames wait (1013) until Redis is back "
                "(%d checks decided alone, %d refused so far)",
                type(exc).__name__,
                exc,
                self.fail_open_s,
                self.unshared,
                self.refused,
            )
