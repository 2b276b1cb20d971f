"""The agent's end of the ``channels`` extension: shells and tunnels the server opened
with a signed ``channel`` message, carried over this connection (docs/sessions.md).

Every channel is two tasks of the connection's nursery, so a dropped connection ends them
all: ``_outgoing`` reads the local side (the pseudo-terminal, the TCP socket) and sends
what the peer's window allows; ``_incoming`` writes what the peer sent and grants the
window back as it goes. What waits is bounded by the window (``ChannelTable``).
"""

from __future__ import annotations

import logging
import socket
import struct
from collections.abc import Awaitable, Callable

import attrs
import trio

from ..clock import wall_ms as now_ms
from ..protocol import (
    AgentSession,
    ChannelClosed,
    ChannelControl,
    ChannelControlReceived,
    ChannelData,
    ChannelDataReceived,
    ChannelTable,
    ShellParams,
    TunnelParams,
)
from ..protocol.channels import MAX_DATA
from .channel_settings import SessionSettings, TunnelSettings
from .intents import IntentGate
from .shell import Refused, ShellProcess, open_shell
from .tunnel import connect_tunnel

__all__ = ["AgentChannels", "LocalEnd"]

log = logging.getLogger("monitoring_ws.agent.channels")

#: Bytes each channel lets the server send before it grants more.
WINDOW = 1 << 20
MAX_OPEN = 16


class LocalEnd:
    """What a channel carries on the agent: a byte stream, and for shells the process."""

    def __init__(self, stream: trio.abc.Stream, shell: ShellProcess | None = None) -> None:
        self.stream = stream
        self.shell = shell


@attrs.define
class _Open:
    end: LocalEnd
    scope: trio.CancelScope
    idle_timeout_s: float | None
    inbox: list[bytes] = attrs.field(factory=list)
    arrived: trio.Event = attrs.field(factory=trio.Event)
    granted: trio.Event = attrs.field(factory=trio.Event)
    last_active: float = attrs.field(factory=trio.current_time)
    #: The peer sent its end of data (an empty frame).
    peer_ended: bool = False
    #: Closed for being idle past ``idle_timeout_s``.
    idled: bool = False
    #: The server's side was reset: reset ours too.
    reset: bool = False


class AgentChannels:
    """One connection's channels, agent side."""

    def __init__(
        self,
        session: AgentSession,
        send: Callable[[str | bytes], Awaitable[None]],
        nursery: trio.Nursery,
        *,
        sessions: SessionSettings,
        tunnels: TunnelSettings,
        gate: IntentGate | None = None,
    ) -> None:
        self._session = session
        #: Operator signatures: an open is an intent too (command ``shell``/``tunnel``).
        self._gate = gate
        self._send = send
        self._nursery = nursery
        self._sessions = sessions
        self._tunnels = tunnels
        self.table = ChannelTable(opener=False, window=WINDOW, max_open=MAX_OPEN)
        self._open: dict[int, _Open] = {}

    async def on_event(self, event: ChannelControlReceived | ChannelDataReceived) -> None:
        """A verified ``channel`` message or data frame (``ProtocolError``: close the
        connection, as the protocol says)."""
        if isinstance(event, ChannelControlReceived):
            await self.on_control(event.control)
        else:
            await self.on_data(event.frame)

    async def on_control(self, control: ChannelControl) -> None:
        outcome = self.table.on_control(control)
        if isinstance(outcome, ChannelClosed):
            opened = self._open.pop(outcome.channel_id, None)
            if opened is not None:
                log.info("channel %d closed by the server: %s", control.channel_id, outcome.reason)
                opened.reset = outcome.reason == "reset"
                opened.scope.cancel()
        elif outcome is control and control.op == "open":
            self._nursery.start_soon(self._serve, control)
        elif outcome is control and control.op == "resize":
            opened = self._open.get(control.channel_id)
            if opened is not None and opened.end.shell is not None:
                opened.end.shell.resize(control.cols or 80, control.rows or 24)
        elif isinstance(outcome, ChannelControl):
            await self._control(outcome)
            self._forget(outcome.channel_id)
        else:
            opened = self._open.get(control.channel_id)
            if opened is not None:  # a grant: the sender may go on
                opened.granted.set()

    async def on_data(self, frame: ChannelData) -> None:
        outcome = self.table.on_data(frame)
        opened = self._open.get(frame.channel_id)
        if isinstance(outcome, ChannelControl):  # a broken rule
            log.warning("channel %d: %s", frame.channel_id, outcome.message)
            await self._control(outcome)
            self._forget(frame.channel_id)
        elif outcome is not None and opened is not None:
            if outcome:
                opened.inbox.append(outcome)
            else:
                opened.peer_ended = True
            opened.arrived.set()

    # -- one channel ------------------------------------------------------------------------

    async def _serve(self, control: ChannelControl) -> None:
        channel_id = control.channel_id
        try:
            end, idle = await self._open_local(control)
        except Refused as refused:
            log.warning("channel %d (%s) refused: %s", channel_id, control.kind, refused.message)
            await self._close(channel_id, refused.reason, refused.message)
            return
        except OSError as error:  # out of descriptors, terminals...: this channel fails
            log.warning("channel %d (%s) failed: %s", channel_id, control.kind, error)
            await self._close(channel_id, "error", f"the agent could not open it: {error}")
            return
        opened = self._open[channel_id] = _Open(end, trio.CancelScope(), idle)
        try:
            with opened.scope:
                await self._control(self.table.accept(channel_id))
                log.info(
                    "channel %d (%s) open for %s",
                    channel_id,
                    control.kind,
                    control.requested_by or "someone",
                )
                reason, message, code = "error", "", None
                try:
                    reason, message, code = await self._run(channel_id, opened)
                except* (trio.BrokenResourceError, ConnectionError) as broken:
                    # The TCP peer reset (or the terminal broke): this channel ends, the
                    # connection and the other channels go on.
                    reason, message = "reset", f"the connection was reset: {_first(broken)}"
                except* OSError as failed:
                    reason, message = "error", str(_first(failed))
                await self._close(channel_id, reason, message, code)
        finally:
            # Also when the connection drops (its nursery cancels this task): no shell
            # outlives its channel.
            self._forget(channel_id)
            with trio.CancelScope(shield=True):
                await _finish(end, reset=opened.reset)

    async def _open_local(self, control: ChannelControl) -> tuple[LocalEnd, float | None]:
        params = control.params
        if self._gate is not None and params is not None and control.kind is not None:
            session = self._session.reply.session_id if self._session.reply else "?"
            use = f"channel {session}/{control.channel_id}"
            refused = self._gate.check(control.kind, params.to_payload(), control.intent, use)
            if refused is not None:
                raise Refused("refused", f"{refused.code}: {refused.message}")
        if isinstance(params, ShellParams):
            process = await open_shell(self._sessions, params)
            return LocalEnd(process.stream, process), self._sessions.idle_timeout_s
        assert isinstance(params, TunnelParams)  # noqa: S101 - the schema's two kinds
        stream = await connect_tunnel(self._tunnels, params)
        return LocalEnd(stream), None

    async def _run(self, channel_id: int, opened: _Open) -> tuple[str, str, int | None]:
        """Both directions until the channel is done: (reason, message, exit code). A
        tunnel is done when both sides sent their end (each half-closes on its own); a
        shell when its terminal closes (the shell exited) or it was idle too long."""
        shell = opened.end.shell
        async with trio.open_nursery() as nursery:
            nursery.start_soon(self._incoming, channel_id, opened)
            if opened.idle_timeout_s is not None:
                nursery.start_soon(self._idle_watch, opened, nursery.cancel_scope)
            await self._outgoing(channel_id, opened)
            if shell is not None:
                nursery.cancel_scope.cancel()
        if opened.idled:
            return "timeout", f"idle for {opened.idle_timeout_s:g} s (sessions.idleTimeoutS)", None
        if shell is not None:
            return "exit", "", await shell.wait()
        return "closed", "", None

    async def _outgoing(self, channel_id: int, opened: _Open) -> None:
        """Local bytes to the server, within the window; an empty frame at the end."""
        stream, session = opened.end.stream, self._session
        while True:
            data = await stream.receive_some(MAX_DATA)
            opened.last_active = trio.current_time()
            view = memoryview(data)
            while True:
                seq, size = self.table.take(channel_id, len(view))
                if seq == 0:
                    if channel_id not in self.table:
                        return
                    opened.granted = trio.Event()
                    await opened.granted.wait()
                    continue
                await self._send(session.seal_channel_data(channel_id, seq, bytes(view[:size])))
                view = view[size:]
                if not view:
                    break
            if not data:
                return

    async def _incoming(self, channel_id: int, opened: _Open) -> None:
        """The server's bytes to the local side; the window granted back as they go."""
        stream = opened.end.stream
        while True:
            while not opened.inbox and not opened.peer_ended:
                opened.arrived = trio.Event()
                await opened.arrived.wait()
            if opened.inbox:
                data = opened.inbox.pop(0)
                await stream.send_all(data)
                opened.last_active = trio.current_time()
                grant = self.table.consumed(channel_id, len(data))
                if grant is not None:
                    await self._control(grant)
                continue
            if isinstance(stream, trio.SocketStream):
                await stream.send_eof()  # half-close: the peer is done sending
            return

    async def _idle_watch(self, opened: _Open, scope: trio.CancelScope) -> None:
        timeout = opened.idle_timeout_s or 0
        while True:
            await trio.sleep_until(opened.last_active + timeout)
            if trio.current_time() >= opened.last_active + timeout:
                break
        opened.idled = True
        scope.cancel()

    async def _control(self, control: ChannelControl) -> None:
        await self._send(self._session.channel(control, now_ms()))

    async def _close(
        self, channel_id: int, reason: str, message: str, exit_code: int | None = None
    ) -> None:
        closing = self.table.close(channel_id, reason, message, exit_code)
        if closing is not None:
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await self._control(closing)

    def _forget(self, channel_id: int) -> None:
        opened = self._open.pop(channel_id, None)
        if opened is not None:
            opened.scope.cancel()


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


async def _finish(end: LocalEnd, *, reset: bool) -> None:
    """Close the local side: a shell's process group is hung up, then killed; a TCP
    connection whose far side was reset is reset."""
    if end.shell is not None:
        await end.shell.terminate()
    if reset and isinstance(end.stream, trio.SocketStream):
        linger = struct.pack("ii", 1, 0)
        end.stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
    with trio.move_on_after(1):
        await end.stream.aclose()
