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

import coredis
import trio
from coredis.exceptions import RedisError
from coredis.tokens import PureToken

from ..protocol import TIMESTAMP_WINDOW_MS, MemoryReplayWindow, ReplayVerdict

__all__ = ["RedisReplayWindow"]

log = logging.getLogger("monitoring_ws.cluster")
#: How long a check may wait for Redis before the local window decides alone.
REDIS_TIMEOUT_S = 0.5
_WARN_EVERY_S = 60.0


class RedisReplayWindow:
    """An asynchronous ``ReplayWindow`` (``await check(...)``), for ``Gateway(shared_replay=)``.

    ``client`` must be open (``async with client``) for as long as the window is used.
    """

    def __init__(
        self,
        client: coredis.Redis[str],
        *,
        window_ms: int = TIMESTAMP_WINDOW_MS,
        prefix: str = "mws:nonce:",
    ) -> None:
        self.client = client
        self.window_ms = window_ms
        self.prefix = prefix
        self.local = MemoryReplayWindow(window_ms)
        #: Checks Redis could not answer (the local window decided alone).
        self.unshared = 0
        self._warned_at = -_WARN_EVERY_S

    async def check(self, agent_id: str, nonce: str, ts_ms: int, now_ms: int) -> ReplayVerdict:
        """NEW (and remembered on every node), DUPLICATE, or STALE."""
        verdict = self.local.check(agent_id, nonce, ts_ms, now_ms)
        if verdict is not ReplayVerdict.NEW:
            return verdict
        key = f"{self.prefix}{agent_id}:{nonce}"
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                stored = await self.client.set(
                    key, "1", condition=PureToken.NX, pxat=ts_ms + self.window_ms
                )
        except (RedisError, OSError, trio.TooSlowError) as exc:
            self._unshared(exc)
            return ReplayVerdict.NEW
        return ReplayVerdict.NEW if stored else ReplayVerdict.DUPLICATE

    def _unshared(self, exc: BaseException) -> None:
        self.unshared += 1
        now = time.monotonic()
        if now - self._warned_at >= _WARN_EVERY_S:
            self._warned_at = now
            log.warning(
                "Redis did not answer a nonce check (%s: %s); this node's own window decides "
                "until it does (%d checks so far)",
                type(exc).__name__,
                exc,
                self.unshared,
            )
