"""The server's end of the ``channels`` extension: the channels open on one agent
connection (``ConnectionChannels``) and the handle the API uses for each
(``ServerChannel``). Memory is bounded by the windows: an agent sends at most what was
granted, and a grant goes out only after the operator's side took the bytes (and, past
``channel_bytes_per_s``, a little later: the agent's channel budget)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any, Protocol

import trio

from ..protocol import (
    ChannelClosed,
    ChannelControl,
    ChannelData,
    ChannelTable,
    ProtocolError,
    ServerSession,
    ShellParams,
    TunnelParams,
)
from ..transports.channels import ChannelEnded, ChannelRefusedError

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .connection import AgentConnection
    from .workload import Workload

__all__ = ["ChannelOpener", "ConnectionChannels", "ServerChannel"]

log = logging.getLogger("monitoring_ws.gateway.channels")

#: What each data frame costs of the channel budget besides its bytes, so that a flood of
#: tiny frames is paced like bulk (a frame's fixed work is worth about this many bytes).
FRAME_COST_BYTES = 16 << 10
#: How long an agent has to accept or refuse an ``open``.
ACCEPT_TIMEOUT_S = 20.0


class ChannelOwner(Protocol):
    """What the channels ask of the gateway."""

    config: GatewayConfig
    channel_budget: Workload
    clock: Callable[[], int]


class ChannelCarrier(Protocol):
    """What a connection offers its channels."""

    @property
    def agent_id(self) -> str: ...

    def send_frame(self, text: str) -> bool: ...

    async def send_binary(self, frame: bytes) -> bool: ...


class ConnectionChannels:
    """The channels of one agent connection, server side (made at the first open)."""

    def __init__(
        self, connection: ChannelCarrier, session: ServerSession, gateway: ChannelOwner
    ) -> None:
        self.agent_id = connection.agent_id
        self._connection = connection
        self._session = session
        self._budget = gateway.channel_budget
        self._clock = gateway.clock
        config = gateway.config
        self.table = ChannelTable(
            opener=True, window=config.channel_window_bytes, max_open=config.max_channels_per_agent
        )
        self.ends: dict[int, ServerChannel] = {}

    def send_control(self, control: ChannelControl) -> bool:
        """Sign and queue a ``channel`` message (False: the connection is closing)."""
        if self._session.closed:
            return False
        return self._connection.send_frame(self._session.channel(control, self._clock()))

    def open(
        self,
        kind: str,
        params: ShellParams | TunnelParams,
        requested_by: str | None,
        intent: Mapping[str, Any] | None = None,
    ) -> ServerChannel:
        try:
            control = self.table.open(kind, params, requested_by, intent)
        except RuntimeError as error:
            raise ChannelRefusedError("too_many_channels", str(error)) from None
        end = self.ends[control.channel_id] = ServerChannel(self, control.channel_id, kind)
        if not self.send_control(control):
            self.ends.pop(control.channel_id, None)
            self.table.close(control.channel_id, "error")
            raise ChannelRefusedError("agent_not_connected", f"agent {self.agent_id} went away")
        return end

    def on_control(self, control: ChannelControl) -> None:
        """A ``channel`` message from the agent (``ProtocolError`` closes the connection)."""
        outcome = self.table.on_control(control)
        end = self.ends.get(control.channel_id)
        if isinstance(outcome, ChannelClosed):
            self.ends.pop(control.channel_id, None)
            if end is not None:
                end.ended_by(ChannelEnded(outcome.reason, outcome.message, outcome.exit_code))
        elif isinstance(outcome, ChannelControl):  # a broken rule: close it, say so
            log.warning("agent %s, channel %d: %s", self.agent_id, control.channel_id, outcome)
            self.send_control(outcome)
            self.ends.pop(control.channel_id, None)
            if end is not None:
                end.ended_by(ChannelEnded("violation", outcome.message or ""))
        elif end is not None:
            if control.op == "accept":
                end.accepted.set()
            end.wake()

    def on_data(self, frame: ChannelData) -> None:
        outcome = self.table.on_data(frame)
        end = self.ends.get(frame.channel_id)
        if isinstance(outcome, ChannelControl):
            log.warning("agent %s, channel %d: %s", self.agent_id, frame.channel_id, outcome)
            self.send_control(outcome)
            self.ends.pop(frame.channel_id, None)
            if end is not None:
                end.ended_by(ChannelEnded("violation", outcome.message or ""))
        elif outcome is not None and end is not None:
            end.arrive(outcome)

    def connection_lost(self) -> None:
        self.table.close_all()
        ends, self.ends = self.ends, {}
        for end in ends.values():
            end.ended_by(ChannelEnded("error", f"the connection of agent {self.agent_id} closed"))

    def close(self, channel_id: int, reason: str, message: str) -> None:
        closing = self.table.close(channel_id, reason, message)
        self.ends.pop(channel_id, None)
        if closing is not None:
            self.send_control(closing)

    def grant(self, channel_id: int, size: int) -> ChannelControl | None:
        return self.table.consumed(channel_id, size)

    def pace(self, size: int) -> float:
        """Charge ``size`` bytes to the agent's channel budget: seconds to hold the grant."""
        return self._budget.charge(self.agent_id, size, self._clock())

    async def send_data(self, channel_id: int, seq: int, data: bytes) -> bool:
        """Seal and queue a data frame (waits while the connection's queue is long);
        False when the connection is closing."""
        if self._session.closed:
            return False
        frame = self._session.seal_channel_data(channel_id, seq, data)
        return await self._connection.send_binary(frame)


class ServerChannel:
    """One channel, as the API's handler uses it (``transports.channels.Channel``)."""

    def __init__(self, book: ConnectionChannels, channel_id: int, kind: str) -> None:
        self._book = book
        self.channel_id = channel_id
        self.kind = kind
        self.accepted = trio.Event()
        self.bytes_in = 0
        self.bytes_out = 0
        self._inbox: list[bytes] = []
        self._agent_ended = False
        self._ended: ChannelEnded | None = None
        self._news = trio.Event()

    @property
    def agent_id(self) -> str:
        return self._book.agent_id

    @property
    def ended(self) -> ChannelEnded | None:
        return self._ended

    def arrive(self, data: bytes) -> None:
        if data:
            self._inbox.append(data)
        else:
            self._agent_ended = True
        self.wake()

    def ended_by(self, ended: ChannelEnded) -> None:
        if self._ended is None:
            self._ended = ended
        self.accepted.set()
        self.wake()

    def wake(self) -> None:
        self._news.set()
        self._news = trio.Event()

    async def wait_accepted(self, timeout_s: float = ACCEPT_TIMEOUT_S) -> None:
        with trio.move_on_after(timeout_s):
            await self.accepted.wait()
        if self._ended is not None:
            raise ChannelRefusedError(self._ended.reason, self._ended.message)
        if not self.accepted.is_set():
            self._book.close(self.channel_id, "timeout", "no answer from the agent")
            raise ChannelRefusedError("timeout", f"no answer from the agent in {timeout_s:g} s")

    async def receive(self) -> bytes:
        while True:
            if self._inbox:
                data = self._inbox.pop(0)
                self.bytes_in += len(data)
                await self._grant(len(data))
                return data
            if self._agent_ended:
                self._agent_ended = False  # reported once
                return b""
            if self._ended is not None:
                raise self._ended
            await self._news.wait()

    async def _grant(self, size: int) -> None:
        wait = self._book.pace(size + FRAME_COST_BYTES)
        if wait > 0:  # over the agent's channel budget: it waits for its grant
            await trio.sleep(wait)
        grant = self._book.grant(self.channel_id, size)
        if grant is not None and self._ended is None:
            self._book.send_control(grant)

    async def send(self, data: bytes) -> None:
        view = memoryview(data)
        while view:
            if self._ended is not None:
                raise self._ended
            seq, size = self._book.table.take(self.channel_id, len(view))
            if seq == 0:
                await self._news.wait()
                continue
            await self._queue(seq, bytes(view[:size]))
            self.bytes_out += size
            view = view[size:]

    async def send_eof(self) -> None:
        if self._ended is not None:
            return
        seq, _ = self._book.table.take(self.channel_id, 0)
        if seq:
            await self._queue(seq, b"")

    async def _queue(self, seq: int, data: bytes) -> None:
        if not await self._book.send_data(self.channel_id, seq, data):
            self.ended_by(ChannelEnded("error", f"the connection of agent {self.agent_id} closed"))
            raise self._ended or ChannelEnded("error")

    def resize(self, cols: int, rows: int) -> None:
        if self._ended is None:
            self._book.send_control(ChannelControl("resize", self.channel_id, cols=cols, rows=rows))

    async def aclose(self, reason: str = "closed", message: str = "") -> None:
        if self._ended is None:
            self._ended = ChannelEnded(reason, message)
            self._book.close(self.channel_id, reason, message)
            self.wake()


class ChannelOpener:
    """Opens channels on this node's agent connections, within the server's limit."""

    def __init__(self, max_open: int) -> None:
        self.max_open = max_open
        self._open: set[ServerChannel] = set()

    def __len__(self) -> int:
        self._open = {channel for channel in self._open if channel.ended is None}
        return len(self._open)

    async def open(
        self,
        connection: AgentConnection,
        kind: str,
        params: Mapping[str, Any],
        requested_by: str | None,
        intent: Mapping[str, Any] | None = None,
    ) -> ServerChannel:
        """Open and wait for the agent's answer; ``ChannelRefusedError`` says why not."""
        try:
            parsed = (ShellParams if kind == "shell" else TunnelParams).from_payload(params)
        except ProtocolError as error:
            raise ChannelRefusedError("bad_request", error.reason) from None
        if len(self) >= self.max_open:
            message = f"{self.max_open} channels are open on this server (max_channels)"
            raise ChannelRefusedError("too_many_channels", message)
        channel = connection.open_channel(kind, parsed, requested_by, intent)
        self._open.add(channel)
        await channel.wait_accepted()
        return channel
