"""The gateway: the ``/agent`` endpoint and the state every connection shares."""

from __future__ import annotations

import logging
import random
import sqlite3
import uuid
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from functools import partial
from typing import TYPE_CHECKING, Any

import trio

from ..clock import wall_ms
from ..host.presence import MemoryRegistry, Registry
from ..host.serving.forwarded import client_address
from ..protocol import (
    FEATURE_ACK,
    FEATURE_CANCEL,
    FEATURE_CHANNELS,
    FEATURE_INTENTS,
    FEATURE_LABELS,
    FEATURE_OUTPUT,
    CloseCode,
    CloseConnection,
    Keyring,
    Limits,
    LogEntry,
    MemoryReplayWindow,
    ProtocolError,
    RateLimit,
    ReplayWindow,
    ServerConfig,
    ServerSession,
    close_reason,
)
from .admission import FAILURE_CODES, Admission
from .channels import ChannelOpener
from .commands import CommandBook
from .config import GatewayConfig
from .connection import AgentConnection
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
from .liveness import ConnectionHistory, SessionSpan, Staleness
from .output import OutputKeeper
from .seen import LastSeen
from .spool import Spool
from .store import StateStore
from .workload import Workload

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, WebsocketScope

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
    """Agents' connections, the registry, commands in flight, and shutdown."""

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
        self._proxies = config.server.proxy_networks()
        #: What each agent's frames cost to read and verify; the wait that bounds it.
        self.workload = Workload(config.agent_cpu_ms_per_s / 1000, config.agent_cpu_burst_ms / 1000)
        self.channel_budget = Workload(config.channel_bytes_per_s, config.channel_burst_bytes)
        self.channel_opener = ChannelOpener(config.max_channels)
        #: Join tokens and enrolled agents' key generations (shared by the workers).
        self.enrollments = JoinTokens(config.server.state_dir)
        #: Agents refused at once (``revoked_agents``; replaced on reload).
        self.revoked: frozenset[str] = frozenset()
        self.stats: Counter[str] = Counter()
        self.shutting_down = False
        #: Set once the background work has made its last commit and closed the store.
        self.closed = trio.Event()
        self._connections: set[AgentConnection] = set()
        #: Set while no connection is open (``wait_closed`` waits for it).
        self._none_open = trio.Event()
        self._none_open.set()
        self.revoke(config.revoked_agents)
        self._session_config = ServerConfig(
            heartbeat_interval_ms=config.heartbeat_interval_ms,
            features=frozenset(
                {FEATURE_ACK, FEATURE_CANCEL, FEATURE_INTENTS, FEATURE_LABELS, FEATURE_OUTPUT}
                | ({FEATURE_CHANNELS} if config.channels else set())
            ),
            rate_limit=RateLimit(
                config.agent_messages_per_s, config.agent_bytes_per_s, config.agent_burst_s
            ),
            # Counted in bytes only: every frame already counts in messages above.
            output_rate=RateLimit(1e9, config.output_bytes_per_s, config.agent_burst_s),
            limits=Limits(
                max_frame_bytes=config.max_frame_bytes,
                max_frame_values=config.max_frame_values,
                max_auth_frame_bytes=config.max_auth_frame_bytes,
                auth_timeout_ms=config.auth_timeout_ms,
            ),
        )

    @property
    def open_connections(self) -> int:
        return len(self._connections)

    async def agent_endpoint(
        self, scope: WebsocketScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        """The raw ASGI ``/agent`` handler (a Quart route costs ~15 KB more per agent)."""
        if (await receive())["type"] != "websocket.connect":
            return
        address, port = scope.get("client") or ("unknown", 0)
        if self._proxies:
            forwarded = next(
                (v.decode("latin-1") for k, v in scope["headers"] if k == b"x-forwarded-for"),
                None,
            )
            address = client_address(address, forwarded, self._proxies)
        del scope  # held by this frame for the connection's life otherwise
        await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
        retry: int | None
        if self.shutting_down:
            code, retry = CloseCode.GOING_AWAY, self.config.shutdown_retry_after_s
        else:
            code, retry = (
                CloseCode.TOO_MANY_ATTEMPTS,
                self.admission.admit(address, trio.current_time()),
            )
        if retry is not None:
            self.stats[f"refused_{int(code)}"] += 1
            reason = close_reason(code, retry)
            await send({"type": "websocket.close", "code": code, "reason": reason})
            return
        lifetime_ms = self.config.max_session_s * 1000
        session = ServerSession(
            self.keyring,
            opened_at_ms=self.clock(),
            session_id=str(uuid.uuid4()),
            config=self._session_config,
            gate=partial(self._gate, address),
            generation_of=self._generation_of,
            # Spread over the last tenth, so a fleet that connected at once does not
            # reconnect at once.
            lifetime_ms=lifetime_ms - random.randrange(lifetime_ms // 10 + 1),  # noqa: S311
            # Sockets opened at once that never authenticate (a flood) are not all closed,
            # and do not all come back, at once: a quarter more, at random.
            auth_extra_ms=random.randrange(self.config.auth_timeout_ms // 4 + 1),  # noqa: S311
        )
        connection = AgentConnection(self, session, receive, send, address=address, port=port)
        self._connections.add(connection)
        if self._none_open.is_set():
            self._none_open = trio.Event()
        self.stats["connections"] += 1
        await connection.run()

    def _gate(self, address: str, agent_id: str) -> ProtocolError | None:
        """Whether a first frame claiming ``agent_id`` may be verified at all."""
        if agent_id in self.revoked:
            return ProtocolError(CloseCode.AUTH_FAILED, f"{agent_id} is revoked")
        retry = self.admission.agent_gate(address, agent_id, trio.current_time())
        if retry is None:
            return None
        return ProtocolError(CloseCode.TOO_MANY_ATTEMPTS, f"{agent_id} failed too often", retry)

    def _generation_of(self, agent_id: str) -> str | None:
        """An enrolled agent's key generation (None: its key is derived from its id)."""
        try:
            generation = self.enrollments.generation(agent_id)
        except sqlite3.Error as exc:  # fail closed: the agent's outbox waits
            log.error(  # noqa: TRY400 - one line, no traceback: the message says it all
                "cannot read the enrollment records in %s: %s", self.enrollments.path, exc
            )
            raise ProtocolError(
                CloseCode.TRY_AGAIN_LATER, "the enrollment records are unreadable", 5
            ) from None
        if generation is False:
            raise ProtocolError(
                CloseCode.AUTH_FAILED, f"{agent_id} was revoked: only a new enrollment admits it"
            )
        return generation

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

    def revoke(self, agent_ids: Iterable[str]) -> int:
        """Refuse these agents from now on (4401) and close their open sessions; returns
        how many sessions were closed. The list replaces the previous one. A revoked id's
        key is forgotten, whether enrolled or derived from the id alone: taking the id off
        the list later brings no old key back; it must enroll again (``--reenroll``)."""
        ids = frozenset(agent_ids)
        self.enrollments.revoke_agents(sorted(ids - self.revoked), self.clock())
        self.revoked = ids
        closed = 0
        for connection in list(self._connections):
            if connection.agent_id in self.revoked:
                connection.revoke()
                closed += 1
        return closed

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
            self._connections.discard(connection)
            if not self._connections:
                self._none_open.set()

    def _command_changed(self, record: CommandRecord) -> None:
        self.output.notify(record.command_id)  # a follower of its output hears it ended
        if self._events is not None:
            self._events.publish("command", record.agent_id, record.to_json())

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

    def shutdown(self) -> None:
        """Refuse new agents and close every open one with 1001 and a retry hint."""
        self.shutting_down = True
        for connection in list(self._connections):
            connection.shutdown(self.config.shutdown_retry_after_s)

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

    async def wait_closed(self, timeout_s: float) -> None:
        """Wait (bounded) until every agent connection has ended."""
        with trio.move_on_after(timeout_s):
            await self._none_open.wait()


def _context(connection: AgentConnection) -> dict[str, str | None]:
    """What a log line about a connection carries in ``--log-format json``."""
    return {
        "agent_id": connection.agent_id or connection.claimed_agent_id,
        "session_id": connection.session_id,
        "address": connection.remote,
    }
