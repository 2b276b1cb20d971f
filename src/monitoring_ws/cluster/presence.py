"""Presence shared by every node: which node holds which agent, with its metadata.

``{prefix}agent:{agentId}`` holds the agent's ``AgentInfo`` as JSON with a time to live of
three heartbeat intervals, refreshed by the node holding it; a node that dies stops
refreshing and its agents disappear from every listing. ``{prefix}agents`` indexes them
(a sorted set scored by when each key expires), so a listing is two round trips whatever
the fleet's size: the live ids, then their values in one pipeline. The newest connection
wins across nodes: registering reads the previous holder atomically (``SET ... GET``)
and, if another node had it, tells that node on its channel ``{prefix}node:{node}`` to
close its connection with 4409. Redis unreachable: each node still knows and serves its own agents.
"""

from __future__ import annotations

import builtins
import logging
from collections.abc import Callable, Mapping
from typing import Any, Generic

import anyio
import coredis
import trio
from coredis.exceptions import RedisError

from ..clock import wall_ms
from ..host.presence import AgentInfo, C, MemoryRegistry
from ..protocol.labels import LabelError, check_labels
from ..transports import ClusterUnavailableError
from .sealing import NodeSeal
from .throttle import Throttle

__all__ = ["RedisRegistry", "agent_info_from_json"]

log = logging.getLogger("monitoring_ws.cluster")
REDIS_TIMEOUT_S = 1.0
#: Pause before subscribing again after the subscription's connection was lost.
RESUBSCRIBE_S = 0.5
# Delete the presence key only if it still names this session (a newer one may own it);
# the value is sealed (sealing.py): the session is in its message, ``m``.
_UNREGISTER = """
local value = redis.call('GET', KEYS[1])
if not value then return 0 end
local ok, sealed = pcall(cjson.decode, value)
if ok and type(sealed) == 'table' and type(sealed['m']) == 'table'
    and sealed['m']['sessionId'] == ARGV[1] then
  redis.call('ZREM', KEYS[2], ARGV[2])
  return redis.call('DEL', KEYS[1])
end
return 0
"""
#: Values read per MGET of a listing (all in one pipeline).
LIST_CHUNK = 1000


def agent_info_from_json(value: dict[str, Any]) -> AgentInfo:
    capabilities = value.get("capabilities", {})
    return AgentInfo(
        agent_id=value["agentId"],
        session_id=value["sessionId"],
        hostname=value["hostname"],
        instance_id=value.get("instanceId"),
        agent_version=value["agentVersion"],
        commands=tuple(capabilities.get("commands", ())),
        features=tuple(capabilities.get("features", ())),
        remote_address=value["remoteAddress"],
        connected_at_ms=value["connectedAt"],
        last_seen_ms=value["lastSeen"],
        node=value["node"],
        # Checked again: Redis carries what nodes wrote, and a label rule may tighten.
        labels=_labels(value.get("labels")),
    )


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(sorted(check_labels(value or {}).items()))
    except LabelError:
        return ()


class RedisRegistry(Generic[C]):
    """A ``Registry`` whose listing and lookups span every node."""

    def __init__(
        self,
        client: coredis.Redis[str],
        node: str,
        seal: NodeSeal,
        *,
        ttl_ms: int,
        prefix: str = "mws:",
    ) -> None:
        self.client = client
        self.node = node
        #: Signs what this node writes and publishes; what others wrote is opened with it.
        self.seal = seal
        self.ttl_ms = ttl_ms
        self.prefix = prefix
        self._local: MemoryRegistry[C] = MemoryRegistry()
        self._unregister = client.register_script(_UNREGISTER)
        #: Redis operations that failed (this node then answered from what it holds).
        self.failures = 0
        #: Handlers of other messages on this node's channel, by their ``type`` (``run``).
        self._handlers: Mapping[str, Callable[[dict[str, Any]], None]] = {}
        self._stale = False  # a Redis operation failed since the last full refresh
        self._failure_warning = Throttle()
        self._refused_warning = Throttle()

    @property
    def reachable(self) -> bool:
        """Whether Redis answered since the last failure (readiness)."""
        return not self._stale

    @property
    def channel(self) -> str:
        """Where other nodes reach this one."""
        return f"{self.prefix}node:{self.node}"

    def _key(self, agent_id: str) -> str:
        return f"{self.prefix}agent:{agent_id}"

    @property
    def _left_key(self) -> str:
        return f"{self.prefix}left"

    @property
    def _index_key(self) -> str:
        return f"{self.prefix}agents"

    # -- Registry -------------------------------------------------------------------------------

    async def register(self, connection: C) -> None:
        await self._local.register(connection)
        info = connection.info()
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                async with self.client.pipeline(transaction=False) as pipe:
                    replaced = pipe.set(
                        self._key(info.agent_id), self._dump(info), px=self.ttl_ms, get=True
                    )
                    pipe.zadd(self._index_key, {info.agent_id: wall_ms() + self.ttl_ms})
                previous = await replaced
                held = None if not previous else self._info(str(previous))
                if held is not None and held.node != self.node:
                    replace = {"replace": info.agent_id, "sessionId": held.session_id}
                    await self.client.publish(
                        f"{self.prefix}node:{held.node}", self.seal.seal(replace, wall_ms())
                    )
        except (RedisError, OSError, trio.TooSlowError, ValueError) as exc:
            self._failed("register", exc)

    async def unregister(self, connection: C) -> None:
        await self._local.unregister(connection)
        info = connection.info()
        now = wall_ms()
        left = self.seal.seal({"agentId": info.agent_id, "leftAt": now}, now)
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                await self._unregister(
                    keys=[self._key(info.agent_id), self._index_key],
                    args=[info.session_id, info.agent_id],
                )
                await self.client.hset(self._left_key, {info.agent_id: left})
        except (RedisError, OSError, trio.TooSlowError) as exc:
            self._failed("unregister", exc)

    async def left(self, agent_id: str | None = None) -> dict[str, int]:
        """When agents left any node (a sealed hash, one field per agent ever connected)."""
        try:
            with trio.fail_after(REDIS_TIMEOUT_S * 5):
                if agent_id is None:
                    values = dict(await self.client.hgetall(self._left_key))
                else:
                    value = await self.client.hget(self._left_key, agent_id)
                    values = {} if value is None else {agent_id: value}
        except (RedisError, OSError, trio.TooSlowError) as exc:
            self._failed("left", exc)
            return {}
        found = {}
        for key, value in values.items():
            fields = self.seal.open(value, wall_ms(), once=False)
            if fields is None or fields.get("agentId") != key:
                self._refused(f"the departure of {key!r}")
                continue
            found[key] = int(fields["leftAt"])
        return found

    def local(self, agent_id: str) -> C | None:
        return self._local.local(agent_id)

    def connections(self) -> list[C]:
        return self._local.connections()

    async def lookup(self, agent_id: str) -> AgentInfo | None:
        try:
            return await self.locate(agent_id)
        except ClusterUnavailableError:
            return None  # the API shows what this node knows; commands say 503

    async def list(self) -> list[AgentInfo]:
        agents = {info.agent_id: info for info in await self._local.list()}
        try:
            with trio.fail_after(REDIS_TIMEOUT_S * 5):
                for info in await self._everyone():
                    agents.setdefault(info.agent_id, info)  # this node's own view wins
        except (RedisError, OSError, trio.TooSlowError) as exc:
            self._failed("list", exc)
        return list(agents.values())

    async def _everyone(self) -> builtins.list[AgentInfo]:
        """Every node's agents: the index's live ids, then their values in one pipeline."""
        ids = await self.client.zrange(
            self._index_key, wall_ms(), "+inf", sortby=coredis.PureToken.BYSCORE
        )
        if not ids:
            return []
        keys = [self._key(str(agent_id)) for agent_id in ids]
        async with self.client.pipeline(transaction=False) as pipe:
            chunks = [
                pipe.mget(keys[start : start + LIST_CHUNK])
                for start in range(0, len(keys), LIST_CHUNK)
            ]
        found: builtins.list[AgentInfo] = []
        for chunk in chunks:
            for value in await chunk:
                info = None if value is None else self._info(str(value))
                if info is not None:  # None: it left, or its key expired meanwhile
                    found.append(info)
        return found

    # -- upkeep ---------------------------------------------------------------------------------

    async def refresh(self) -> None:
        """Rewrite every agent this node holds, with its lastSeen, for another TTL."""
        connections = self._local.connections()
        try:
            with trio.fail_after(REDIS_TIMEOUT_S * 5):
                if not connections:
                    await self.client.ping()
                    self._stale = False
                    return
                now = wall_ms()
                async with self.client.pipeline(transaction=False) as pipe:
                    expires: dict[str | bytes, int | float] = {}
                    for connection in connections:
                        info = connection.info()
                        pipe.set(self._key(info.agent_id), self._dump(info), px=self.ttl_ms)
                        expires[info.agent_id] = now + self.ttl_ms
                    pipe.zadd(self._index_key, expires)
                    # Agents of nodes that died: their keys expired, so do their entries.
                    pipe.zremrangebyscore(self._index_key, float("-inf"), now)
            self._stale = False
        except (RedisError, OSError, trio.TooSlowError) as exc:
            self._failed("refresh", exc)

    async def locate(self, agent_id: str) -> AgentInfo | None:
        """Like ``lookup``, but a Redis failure is an error, not "not connected"."""
        local = await self._local.lookup(agent_id)
        if local is not None:
            return local
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                value = await self.client.get(self._key(agent_id))
        except (RedisError, OSError, trio.TooSlowError) as exc:
            self._failed("lookup", exc)
            raise ClusterUnavailableError(
                f"cannot tell which node holds agent {agent_id}: Redis is unreachable "
                f"({type(exc).__name__}); agents of this node still answer"
            ) from None
        return None if value is None else self._info(value)

    def _dump(self, info: AgentInfo) -> str:
        now = wall_ms()
        return self.seal.seal(info.to_json(), now, expires_ms=now + self.ttl_ms)

    def _info(self, value: str) -> AgentInfo | None:
        """A presence value another node sealed and that has not expired; None (logged)
        for anything else (a departed agent's value written back, say)."""
        fields = self.seal.open(value, wall_ms(), once=False, expiring=True)
        if fields is not None:
            try:
                return agent_info_from_json(fields)
            except (KeyError, TypeError, ValueError):
                pass
        self._refused("a presence value")
        return None

    def _refused(self, what: str) -> None:
        if self._refused_warning.due():
            log.warning(
                "ignored %s in Redis that this cluster did not sign (%d so far): someone "
                "else writes to this Redis, or a node has another master secret",
                what,
                self.seal.refused,
            )

    def on_message(self, data: str) -> None:
        """A message on this node's channel: "close your older connection", or one for a
        handler given to ``run`` (by its ``type``)."""
        message = self.seal.open(data, wall_ms())
        if message is None:
            self._refused(f"a message on {self.channel}")
            return
        handler = self._handlers.get(str(message.get("type")))
        if handler is not None:
            handler(message)
            return
        agent_id = message.get("replace")
        connection = None if agent_id is None else self._local.local(agent_id)
        if connection is not None and connection.info().session_id == message.get("sessionId"):
            connection.replace()  # 4409: a newer connection of the agent is on another node

    async def run(self, handlers: Mapping[str, Callable[[dict[str, Any]], None]]) -> None:
        """Listen on this node's channel (subscribing again whenever Redis comes back),
        pass messages of other parts to ``handlers`` by their ``type``, and keep presence
        fresh."""
        self._handlers = handlers
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._refresh_loop)
            while True:
                try:
                    await self._listen()
                except* (RedisError, OSError, anyio.BrokenResourceError) as group:
                    self._failed("subscription", group.exceptions[0])
                except* anyio.ClosedResourceError:
                    pass  # coredis (6.9) closing a subscription that lost its connection
                await trio.sleep(RESUBSCRIBE_S)

    async def _listen(self) -> None:
        # No retry policy: a lost connection ends the subscription, and ``run`` renews it
        # (coredis's own retries could wait far longer than a node should be deaf).
        async with self.client.pubsub(
            channels=[self.channel], ignore_subscribe_messages=True, retry_policy=None
        ) as pubsub:
            async for message in pubsub:
                if message.get("type") == "message":
                    self.on_message(str(message["data"]))

    async def _refresh_loop(self) -> None:
        # A full rewrite every third of the TTL, and at once when a Redis operation failed
        # or this node's marker key is gone (a restarted Redis may have lost everything).
        period = self.ttl_ms / 3000
        next_full = trio.current_time() + period
        while True:
            await trio.sleep(min(1.0, period))
            lost = await self._marker_lost()
            if lost or self._stale or trio.current_time() >= next_full:
                next_full = trio.current_time() + period
                await self.refresh()

    async def _marker_lost(self) -> bool:
        try:
            with trio.fail_after(REDIS_TIMEOUT_S):
                previous = await self.client.set(
                    f"{self.prefix}alive:{self.node}", "1", px=self.ttl_ms, get=True
                )
        except (RedisError, OSError, trio.TooSlowError) as exc:
            self._failed("liveness check", exc)
            return False
        return previous is None

    def _failed(self, what: str, exc: BaseException) -> None:
        self.failures += 1
        self._stale = True
        if self._failure_warning.due():
            log.warning(
                "Redis failed a presence %s (%s: %s); this node answers for its own agents "
                "until it is back (%d failures so far)",
                what,
                type(exc).__name__,
                exc,
                self.failures,
            )
