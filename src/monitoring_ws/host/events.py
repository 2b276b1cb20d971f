"""Live events for ``GET /api/events`` (server-sent events): agents connecting and leaving,
metrics samples, log lines, command state changes.

Publishing never waits: each event gets the next id and goes to a ring of the last
``ring`` events, at most ``ring_bytes`` (what a client that reconnects with
``Last-Event-ID`` is replayed from) and to each subscriber's bounded queue. A subscriber
that falls ``queue_limit`` events (or ``queue_bytes``) behind is dropped (counted); its
stream ends and it reconnects from its last id.
"""

from __future__ import annotations

import json
import time
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection, Mapping
from typing import Any

import attrs
import trio

__all__ = ["DROPPED", "EVENT_TYPES", "KEEPALIVE", "Event", "EventHub", "Subscription"]

#: What ``subscribe`` yields besides events: nothing happened for a while (send a comment,
#: so proxies keep the stream open), and the subscriber fell behind (end the stream).
KEEPALIVE, DROPPED = "keepalive", "dropped"

EVENT_TYPES = frozenset(
    {
        "agent_connected",
        "agent_disconnected",
        "agent_stale",
        "agent_active",
        "metrics",
        "log",
        "command",
        "job",
    }
)


@attrs.frozen
class Event:
    id: int
    type: str
    agent_id: str
    ts: int
    data: Mapping[str, Any]
    #: What it counts against the ring's bytes (about its JSON's length).
    size: int = attrs.field(default=0, eq=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "type": self.type,
            "agentId": self.agent_id,
            "ts": self.ts,
            **self.data,
        }


@attrs.define(eq=False)
class Subscription:
    """One client's view: what it asked for, and its queue."""

    wants: Callable[[Event], bool]
    limit: int
    limit_bytes: int = 16 << 20
    queue: deque[Event] = attrs.field(factory=deque)
    #: What the queue holds, in event sizes.
    held: int = 0
    ready: trio.Event = attrs.field(factory=trio.Event)
    #: Dropped for falling behind: its stream ends.
    overflowed: bool = False
    #: Woken with nothing to deliver (``EventHub.nudge``): it yields ``KEEPALIVE`` now.
    nudged: bool = False

    def put(self, event: Event) -> None:
        if self.overflowed or not self.wants(event):
            return
        queue = self.queue
        if len(queue) >= self.limit or (queue and self.held + event.size > self.limit_bytes):
            self.overflowed = True
            self.queue.clear()
            self.held = 0
        else:
            self.queue.append(event)
            self.held += event.size
        self.ready.set()

    def take(self) -> Event:
        event = self.queue.popleft()
        self.held -= event.size
        return event


class EventHub:
    """Ids, the replay ring, and the subscribers."""

    def __init__(
        self,
        *,
        ring: int = 10_000,
        ring_bytes: int = 64 << 20,
        queue_limit: int = 1_000,
        queue_bytes: int = 16 << 20,
    ) -> None:
        self._ring: deque[Event] = deque()
        self.ring, self.ring_bytes, self.queue_bytes = ring, ring_bytes, queue_bytes
        #: What the ring holds, counted in event sizes.
        self.ring_held = 0
        self._next_id = 1
        self.queue_limit = queue_limit
        self._subscriptions: set[Subscription] = set()
        #: Subscribers dropped for falling behind.
        self.dropped = 0
        self._closed = False

    def close(self) -> None:
        """At shutdown: every stream ends now (clients reconnect elsewhere with their
        last id) instead of holding the listener open."""
        self._closed = True
        for subscription in self._subscriptions:
            subscription.ready.set()

    def nudge(self) -> None:
        """Every waiting subscriber yields ``KEEPALIVE`` now: its stream looks again at
        what it may see (after a reload of the API tokens)."""
        for subscription in self._subscriptions:
            subscription.nudged = True
            subscription.ready.set()

    @property
    def subscribers(self) -> int:
        return len(self._subscriptions)

    def publish(
        self, kind: str, agent_id: str, data: Mapping[str, Any], *, size: int | None = None
    ) -> None:
        """Publish an event; ``size`` is what it weighs in the ring (its frame's length,
        say), else it is measured as JSON."""
        if size is None:
            size = len(json.dumps(data, separators=(",", ":"), default=str))
        event = Event(self._next_id, kind, agent_id, int(time.time() * 1000), data, size + 64)
        self._next_id += 1
        ring = self._ring
        ring.append(event)
        self.ring_held += event.size
        while len(ring) > self.ring or (self.ring_held > self.ring_bytes and len(ring) > 1):
            self.ring_held -= ring.popleft().size
        for subscription in self._subscriptions:
            subscription.put(event)

    async def subscribe(
        self,
        *,
        types: Collection[str] = EVENT_TYPES,
        agents: Callable[[str], bool] = lambda _: True,
        after: int | None = None,
        keepalive_s: float = 15.0,
    ) -> AsyncIterator[Event | str]:
        """Events of ``types`` for agents ``agents`` accepts, from after ``after`` (at
        most the last ``queue_limit`` of them still in the ring) on; ``KEEPALIVE`` after
        ``keepalive_s`` without one; ``DROPPED`` (then the end) if it falls behind."""

        def wants(event: Event) -> bool:
            return event.type in types and agents(event.agent_id)

        subscription = Subscription(wants, self.queue_limit, self.queue_bytes)
        if after is not None:
            missed = [event for event in self._ring if event.id > after and wants(event)]
            replayed: list[Event] = []  # the newest that fit the queue's bounds
            weight = 0
            for event in reversed(missed[-self.queue_limit :]):
                weight += event.size
                if replayed and weight > self.queue_bytes:
                    break
                replayed.append(event)
            for event in reversed(replayed):
                subscription.put(event)
        self._subscriptions.add(subscription)
        try:
            while not self._closed:
                if subscription.overflowed:
                    self.dropped += 1
                    yield DROPPED
                    return
                if not subscription.queue:
                    subscription.ready = trio.Event()
                    with trio.move_on_after(keepalive_s) as idle:
                        await subscription.ready.wait()
                    if idle.cancelled_caught or subscription.nudged:
                        subscription.nudged = False
                        yield KEEPALIVE
                    continue
                yield subscription.take()
        finally:
            self._subscriptions.discard(subscription)
