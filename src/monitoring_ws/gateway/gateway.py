"""The gateway: the parts every agent connection shares, put together, and what happens
as a connection authenticates and ends. Its faces: ``endpoint`` (the ``/agent`` handler),
``live`` (open connections, shutdown), ``view`` (what routes and metrics read)."""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import trio

from ..clock import wall_ms
from ..host.presence import MemoryRegistry, Registry
from ..protocol import (
    FEATURE_ACK,
    CloseCode,
    CloseConnection,
    Keyring,
    LogEntry,
    MemoryReplayWindow,
    ReplayWindow,
)
from .admission import FAILURE_CODES, Admission
from .channels import ChannelOpener
from .commands import CommandBook
from .config import GatewayConfig
from .connection import AgentConnection
from .endpoint import AgentEndpoint
from .enrollment import JoinTokens
from .links import (
    AuditOut,
    EventsOut,
    MetricsOut,
    RemoteCommands,
    SharedRecords,
    SharedReplayWindow,
    TelemetryOut,
)
from .live import LiveConnections
from .liveness import ConnectionHistory, SessionSpan, Staleness
from .output import OutputKeeper
from .seen import LastSeen
from .spool import Spool
from .store import StateStore
from .view import GatewayView
from .workload import Workload

if TYPE_CHECKING:
    from ..transports.records import CommandRecord


__all__ = [
    "AGENT_PATH",
    "Gateway",
    "RemoteCommands",
    "SharedRecords",
    "SharedReplayWindow",
    "TelemetryOut",
]

AGENT_PATH = "/agent"
log = logging.getLogger("monitoring_ws.gateway")
#: Routine closes stay out of the warnings; failed checks and slow agents do not.
_CLOSE_LOG_LEVEL = {
    CloseCode.GOING_AWAY: logging.DEBUG,
    CloseCode.REPLACED: logging.INFO,
    CloseCode.TIMEOUT: logging.INFO,
}


class _Discard:
    def metrics(self, agent_id: str, ts: int, values: Mapping[str, Any], *, size: int = 0) -> None:
        return None

    def logs(self, agent_id: str, entries: Sequence[LogEntry], *, size: int = 0) -> None:
        return None


class Gateway:
    """One node's agents: the registry, commands in flight, the spool, and the hooks each
    connection calls (``ConnectionOwner``)."""

    def __init__(
        self,
        config: GatewayConfig,
        keyring: Keyring,
        *,
        registry: Registry[AgentConnection] | None = None,
        sink: TelemetryOut | None = None,
        replay: ReplayWindow | None = None,
        shared_replay: SharedReplayWindow | None = None,
        node: str = "local",
        remote: RemoteCommands | None = None,
        records: SharedRecords | None = None,
        clock: Callable[[], int] = wall_ms,
        metrics: MetricsOut | None = None,
        audit: AuditOut | None = None,
        events: EventsOut | None = None,
    ) -> None:
        """``registry``, ``shared_replay``, ``remote`` and ``records`` are shared with other
        nodes in a cluster (``monitoring_ws.cluster.Cluster``); alone, the defaults."""
        self.config = config
        self.keyring = keyring
        #: Wall-clock ms for sessions (their timestamps, heartbeats, lifetimes).
        self.clock = clock
        self._audit = audit
        self._events = events
        self.node = node
        self.registry: Registry[AgentConnection] = registry or MemoryRegistry()
        self.sink: TelemetryOut = sink or _Discard()
        self.replay: ReplayWindow = replay or MemoryReplayWindow()
        #: With several nodes: the window they share (asked after the signature checks).
        self.shared_replay = shared_replay
        #: With several nodes: how commands reach agents other nodes hold.
        self.remote = remote
        #: With several nodes: every node's command records (their copies).
        self.records = records
        self.store = StateStore(
            config.state_file,
            sync=config.state_sync,
            on_commit=None if records is None else records.mirror,
            timed=None if metrics is None else metrics.state_committed,
        )
        self.commands = CommandBook(
            self.store,
            elsewhere=None if records is None else records.get,
            ended=None if metrics is None else metrics.command_ended,
            changed=self._command_changed,
        )
        #: Streamed output of the commands this node sent.
        self.output = OutputKeeper(
            self.store, window_bytes=config.output_window_bytes, agent_of=self.commands.agent_of
        )
        self.last_seen = LastSeen(self.store)
        #: Connected agents silent for two heartbeat intervals, and recent sessions.
        self.staleness = Staleness(2 * config.heartbeat_interval_ms)
        self.history = ConnectionHistory()
        self.commands.restore(self.store.load_open_commands(), wall_ms())
        self.spool = Spool(config, self.store, self.commands, self.registry.local)
        self.admission = Admission(
            config.max_unauthenticated,
            config.auth_failures_per_minute,
            max_unauthenticated_per_address=config.max_unauthenticated_per_address,
            address_failures_per_minute=config.address_failures_per_minute,
        )
        #: What each agent's frames cost to read and verify; the wait that bounds it.
        self.workload = Workload(config.agent_cpu_ms_per_s / 1000, config.agent_cpu_burst_ms / 1000)
        self.channel_budget = Workload(config.channel_bytes_per_s, config.channel_burst_bytes)
        self.channel_opener = ChannelOpener(config.max_channels)
        #: Join tokens and enrolled agents' key generations (shared by the workers).
        self.enrollments = JoinTokens(config.server.state_dir)
        self.stats: Counter[str] = Counter()
        #: Set once the background work has made its last commit and closed the store.
        self.closed = trio.Event()
        self.live = LiveConnections()
        #: The ``/agent`` handler (an ASGI callable).
        self.endpoint = AgentEndpoint(
            self,
            live=self.live,
            admission=self.admission,
            enrollments=self.enrollments,
            keyring=lambda: self.keyring,
            stats=self.stats,
        )
        self.endpoint.revoke(config.revoked_agents)
        #: What routes and metrics read.
        self.view = GatewayView(self)

    def rekeyed(self, agent_id: str) -> None:
        """``agent_id`` enrolled again: its open session (on this node) signs with the old
        key, so it ends (4401) and the new holder of the id connects."""
        connection = self.registry.local(agent_id)
        if connection is not None:
            connection.revoke()

    async def knows(self, agent_id: str) -> bool:
        """Whether ``agent_id`` is connected (on any node) or was ever seen here."""
        if await self.last_seen.get(agent_id) is not None:
            return True
        return await self.registry.lookup(agent_id) is not None

    async def authenticated(self, connection: AgentConnection) -> None:
        self.admission.authenticated(connection.address)
        self.stats["authenticated"] += 1
        await self.registry.register(connection)
        now = self.clock()
        self.last_seen.note(connection.agent_id, now)
        span = SessionSpan(connection.session_id, connection.remote, self.node, now)
        self.history.opened(connection.agent_id, span)
        log.info(
            "agent %s connected from %s",
            connection.agent_id,
            connection.remote,
            extra=_context(connection),
        )
        if self._events is not None:
            self._events.publish(
                "agent_connected", connection.agent_id, connection.info().to_json()
            )
        if connection.speaks(FEATURE_ACK):
            self.spool.greet(connection)
        self.commands.agent_connected(connection)

    async def connection_ended(self, connection: AgentConnection, authenticated: bool) -> None:
        try:
            if authenticated:
                await self.registry.unregister(connection)  # may wait on Redis
                now, closing = self.clock(), connection.closing
                self.last_seen.note(connection.agent_id, now)
                code = None if closing is None else int(closing.code)
                self.history.closed(connection.agent_id, connection.session_id, now, code)
                self.staleness.forget(connection.agent_id)
                self.commands.connection_lost(connection)
                log.info("agent %s disconnected", connection.agent_id, extra=_context(connection))
                if self._events is not None:
                    left = {"transport": "websocket", "node": self.node}
                    self._events.publish("agent_disconnected", connection.agent_id, left)
            else:
                closing = connection.closing
                self.admission.left_unauthenticated(
                    connection.address,
                    connection.claimed_agent_id,
                    trio.current_time(),
                    failed=closing is not None and closing.code in FAILURE_CODES,
                )
        finally:
            # Only now is it gone: a shutdown waits for this before the last commit.
            self.live.ended(connection)

    def _command_changed(self, record: CommandRecord, weight: int) -> None:
        self.output.notify(record.command_id)  # a follower of its output hears it ended
        if self._events is not None:
            self._events.publish("command", record.agent_id, record.to_json(), size=weight)

    def log_close(self, connection: AgentConnection, event: CloseConnection) -> None:
        self.stats[f"closed_{int(event.code)}"] += 1
        who = connection.agent_id or connection.remote
        level = _CLOSE_LOG_LEVEL.get(event.code, logging.WARNING)
        if event.code == CloseCode.TIMEOUT and not connection.agent_id:
            # A socket that never said who it is: scanners and floods, counted in the
            # metrics; a line each would cost a flood's every socket a log write.
            level = logging.DEBUG
        if event.code == CloseCode.AUTH_FAILED and self._audit is not None:
            agent_id = connection.agent_id or connection.claimed_agent_id
            self._audit.noisy("agent_auth_failed", agentId=agent_id, address=connection.address)
        if not log.isEnabledFor(level):
            return
        # ``detail`` names the failed check: for the log only, never for the peer.
        detail = event.detail or event.reason
        extra = _context(connection)
        log.log(level, "closing %s with %d: %s", who, event.code, detail, extra=extra)

    async def run(self) -> None:
        """The background work of a running gateway: commits, acks, deadlines, pruning.

        Cancel it after the agents are closed: its last act is a final commit."""
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._watch_staleness)
                await self.spool.run()
        finally:
            self.store.close()
            self.enrollments.close()
            self.closed.set()

    async def _watch_staleness(self) -> None:
        """Publish ``agent_stale`` / ``agent_active`` as connected agents go quiet and speak
        again (a scan every half heartbeat interval: O(connections), no per-message work)."""
        period_s = self.config.heartbeat_interval_ms / 2000
        while True:
            await trio.sleep(period_s)
            heard = {c.agent_id: c.last_heard_ms for c in self.registry.connections()}
            turned, back = self.staleness.scan(self.clock(), heard)
            if self._events is not None:
                for agent_id in turned:
                    self._events.publish("agent_stale", agent_id, {"lastSeen": heard[agent_id]})
                for agent_id in back:
                    self._events.publish("agent_active", agent_id, {"lastSeen": heard[agent_id]})


def _context(connection: AgentConnection) -> dict[str, str | None]:
    """What a log line about a connection carries in ``--log-format json``."""
    return {
        "agent_id": connection.agent_id or connection.claimed_agent_id,
        "session_id": connection.session_id,
        "address": connection.remote,
    }
