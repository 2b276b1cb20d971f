"""The interfaces the gateway's parts meet at: what the gateway is built with (shared
with other nodes in a cluster), and what the command book and the spool ask of an agent's
connection. Protocols only, so that no part imports another in a circle."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol

if TYPE_CHECKING:
    from collections import Counter
    from collections.abc import Callable

    from ..host.presence import AgentInfo
    from ..protocol import CloseConnection, Command, Delivery, LogEntry, ReplayVerdict, ReplayWindow
    from ..transports import CommandOrder, CommandOutcome
    from ..transports.records import CommandRecord, RecordQuery
    from .commands import CommandBook
    from .config import GatewayConfig
    from .connection import AgentConnection
    from .output import OutputKeeper
    from .spool import Spool
    from .workload import Workload

__all__ = [
    "AgentLink",
    "AuditOut",
    "ConnectionOwner",
    "EventsOut",
    "MetricsOut",
    "RemoteCommands",
    "SharedRecords",
    "SharedReplayWindow",
    "TelemetryOut",
]


class AuditOut(Protocol):
    """The host's audit log, for refusals anyone can cause (rate-limited there)."""

    def noisy(self, event: str, **fields: Any) -> None: ...


class EventsOut(Protocol):
    """The host's live events (``GET /api/events``); called on the event loop, never waits."""

    def publish(
        self, kind: str, agent_id: str, data: Mapping[str, Any], *, size: int | None = None
    ) -> None:
        """``size``: what the event weighs in memory, when known (else it is measured)."""


class MetricsOut(Protocol):
    """Where the gateway reports what it observes per command and per commit (the host's
    ``ServerMetrics``)."""

    def command_ended(self, transport: str, outcome: str, seconds: float) -> None: ...

    def state_committed(self, seconds: float) -> None: ...


class AgentLink(Protocol):
    """An authenticated agent's connection, as the command book and the spool use it
    (``AgentConnection``; only it drives its session)."""

    @property
    def agent_id(self) -> str: ...

    @property
    def closing(self) -> CloseConnection | None: ...

    def command_frame(self, command: Command, now_ms: int) -> str: ...

    def send_frame(self, text: str) -> bool: ...

    def speaks(self, feature: str) -> bool: ...

    def send_ack(self, mark: Delivery, now_ms: int) -> bool: ...

    def send_cancel(self, command_id: str, now_ms: int) -> bool: ...


class SharedReplayWindow(Protocol):
    """A replay window other nodes share (``monitoring_ws.cluster.RedisReplayWindow``)."""

    async def check(self, agent_id: str, nonce: str, ts_ms: int, now_ms: int) -> ReplayVerdict: ...


class TelemetryOut(Protocol):
    """Where accepted metrics and logs go (the host's telemetry bus): called on the event
    loop for every message, so it must not wait. ``size``: the frame's length, what the
    bus's byte bounds count it as (0: unknown, estimated)."""

    def metrics(
        self, agent_id: str, ts: int, values: Mapping[str, Any], *, size: int = 0
    ) -> None: ...

    def logs(self, agent_id: str, entries: Sequence[LogEntry], *, size: int = 0) -> None: ...


class SharedRecords(Protocol):
    """Command records other nodes can read (``monitoring_ws.cluster.RedisRecords``)."""

    async def mirror(self, rows: list[tuple[str, str]]) -> None:
        """Share ``(commandId, record JSON)`` rows this node just committed."""
        ...

    async def get(self, command_id: str) -> tuple[CommandRecord, str] | None:
        """Another node's record and that node's name."""
        ...

    async def history(self, query: RecordQuery) -> list[dict[str, Any]] | None:
        """A page of every node's records; None when that cannot be known now."""
        ...


class RemoteCommands(Protocol):
    """Commands to agents other nodes hold (``monitoring_ws.cluster.NodeRouter``)."""

    async def locate(self, agent_id: str) -> AgentInfo | None:
        """Who holds the agent; raises ``ClusterUnavailableError`` when that is unknowable."""
        ...

    async def send(self, node: str, order: CommandOrder) -> CommandOutcome: ...

    async def submit(self, node: str, order: CommandOrder) -> dict[str, Any]: ...


class ConnectionOwner(Protocol):
    """What a connection asks of the gateway that opened it."""

    config: GatewayConfig
    #: Wall-clock milliseconds (injectable: tests drive heartbeats with trio's MockClock).
    clock: Callable[[], int]
    node: str
    replay: ReplayWindow
    shared_replay: SharedReplayWindow | None
    commands: CommandBook
    output: OutputKeeper
    spool: Spool
    sink: TelemetryOut
    stats: Counter[str]
    workload: Workload
    #: Each agent's channel bytes a second (``channel_bytes_per_s``).
    channel_budget: Workload

    async def authenticated(self, connection: AgentConnection) -> None: ...

    async def connection_ended(self, connection: AgentConnection, authenticated: bool) -> None: ...

    def log_close(self, connection: AgentConnection, event: CloseConnection) -> None: ...
