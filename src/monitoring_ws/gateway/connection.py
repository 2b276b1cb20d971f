"""One agent's WebSocket from accept to close: one nursery, a reader and a writer.

The reader runs in the connection's own task: it feeds frames to the sans-IO
``ServerSession`` and acts on the events; the session's deadline (auth, heartbeat
silence) is the cancel scope around each read, not a task. The writer (writer.py) is a
task of the connection's nursery that exists only while frames are queued. The queue is
bounded: a slow agent first gets backpressure and then, when it overflows, a 1013 close.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import trio

from ..host.presence import AgentInfo
from ..plugin_api import TOO_BIG
from ..protocol import (
    DEFAULT_MAX_FRAME_VALUES,
    FEATURE_CHANNELS,
    FEATURE_INTENTS,
    FEATURE_LABELS,
    Authenticated,
    ChannelControlReceived,
    ChannelDataReceived,
    CloseCode,
    CloseConnection,
    Command,
    CommandOutputReceived,
    CommandResultReceived,
    Delivery,
    DuplicateDropped,
    Event,
    LogsReceived,
    MetricsReceived,
    ProtocolError,
    SendFrame,
    ServerSession,
    values_over,
)
from ..transports import CommandTooLargeError, InvalidCommandError
from ..transports.channels import ChannelRefusedError
from .channels import ConnectionChannels, ServerChannel
from .writer import FrameWriter

if TYPE_CHECKING:
    from collections.abc import Callable

    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable

    from ..protocol import ShellParams, TunnelParams
    from .links import ConnectionOwner, SharedReplayWindow

__all__ = ["PEER_CLOSE_CODES", "AgentConnection"]


#: Close codes a peer's close is counted under by name (metrics label values); any other
#: code, which a peer may choose before it authenticates, is counted as ``other``.
PEER_CLOSE_CODES = frozenset(range(1000, 1016)) | frozenset(int(code) for code in CloseCode)

#: The most a frame is charged (``agent_cpu_ms_per_s``): this, plus a microsecond a
#: character of it.
MOST_PER_FRAME_S = 1e-4
MOST_PER_CHARACTER_S = 1e-6

#: How long queued frames and the close frame may take to leave after a close is decided.
CLOSE_GRACE_S = 2.0


class AgentConnection(FrameWriter):
    """The I/O shell around one ``ServerSession``."""

    __slots__ = (
        "_authenticated",
        "_gateway",
        "_output_kept",
        "_read_scope",
        "_receive",
        "_session",
        "address",
        "channels",
        "connected_at_ms",
        "port",
    )

    def __init__(
        self,
        gateway: ConnectionOwner,
        session: ServerSession,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        *,
        address: str,
        port: int,
    ) -> None:
        super().__init__(send)
        self._gateway = gateway
        self._session = session
        self._receive = receive
        self.address = address
        self.port = port
        self.connected_at_ms = gateway.clock()
        self._read_scope: trio.CancelScope | None = None
        self._authenticated = False
        #: The last frame was a chunk of output kept for a command sent to this agent:
        #: the output budget (bytes) bounds what those cost, not the CPU share.
        self._output_kept = False
        #: Made at the first channel opened: most agents never have one.
        self.channels: ConnectionChannels | None = None

    # -- what others call -----------------------------------------------------------------

    @property
    def remote(self) -> str:
        return f"{self.address}:{self.port}"

    @property
    def closing(self) -> CloseConnection | None:
        """The close decided on this connection, if any."""
        return self._closing

    @property
    def agent_id(self) -> str:
        return self._session.agent_id or ""

    @property
    def session_id(self) -> str:
        return self._session.session_id

    @property
    def last_heard_ms(self) -> int:
        """When the last verified message arrived (wall ms)."""
        return self._session.last_heard_ms

    @property
    def claimed_agent_id(self) -> str | None:
        """The agentId the first frame claimed (before it was verified), if any."""
        return self._session.claimed_agent_id

    @property
    def ready(self) -> bool:
        """Authenticated, and not closing: it can take commands."""
        return self._session.hello is not None and self._closing is None

    @property
    def commands(self) -> tuple[str, ...]:
        """The commands the agent offers (none before it authenticated)."""
        hello = self._session.hello
        return () if hello is None else tuple(hello.capabilities.commands)

    def offers(self, command: str) -> bool:
        return command in self.commands

    def speaks(self, feature: str) -> bool:
        """Whether the agent negotiated an optional protocol feature (``ack``, ``cancel``)."""
        return feature in self._session.features

    def send_ack(self, mark: Delivery, now_ms: int) -> bool:
        return self.send_frame(self._session.ack(mark, now_ms))

    def send_cancel(self, command_id: str, now_ms: int) -> bool:
        return self.send_frame(self._session.cancel(command_id, now_ms))

    def revoke(self) -> None:
        """Close with 4401: the agent's id was revoked."""
        error = ProtocolError(CloseCode.AUTH_FAILED, f"{self.agent_id} was revoked")
        self.close(self._session.fail(error))

    def info(self) -> AgentInfo:
        session = self._session
        hello = session.hello
        assert hello is not None  # noqa: S101 - only registered once authenticated
        return AgentInfo(
            agent_id=self.agent_id,
            session_id=session.session_id,
            hostname=hello.hostname,
            instance_id=hello.instance_id,
            agent_version=hello.agent_version,
            commands=hello.capabilities.commands,
            features=session.features,
            remote_address=self.remote,
            connected_at_ms=self.connected_at_ms,
            last_seen_ms=session.last_heard_ms,
            node=self._gateway.node,
            labels=hello.labels if FEATURE_LABELS in session.features and hello.labels else (),
        )

    def replace(self) -> None:
        self.close(self._session.close(CloseCode.REPLACED))

    def shutdown(self, retry_after_s: int) -> None:
        self.close(self._session.close(CloseCode.GOING_AWAY, retry_after_s))

    def command_frame(self, command: Command, now_ms: int) -> str:
        """The signed frame for ``command``; raises ``InvalidCommandError`` when it cannot be
        signed or would exceed the frame limit (nothing is sent or recorded then)."""
        try:
            frame = self._session.command(command, now_ms)
        except (ValueError, RuntimeError) as exc:
            raise InvalidCommandError(f"the command cannot be signed: {exc}") from None
        config = self._gateway.config
        limit = config.max_frame_bytes
        # A str of n characters encodes to at most 4n bytes: most frames need no encoding.
        if len(frame) * 4 > limit and len(frame.encode()) > limit:
            raise CommandTooLargeError(
                f"the signed command would be {len(frame.encode())} bytes; "
                f"frames are limited to {limit} bytes"
            )
        # Agents read at most the protocol's default (they do not say), whatever ours is.
        most = min(config.max_frame_values, DEFAULT_MAX_FRAME_VALUES)
        values = values_over(frame, most)
        if values:
            raise CommandTooLargeError(
                f"the command's arguments hold about {values} JSON values; "
                f"frames are limited to {most}"
            )
        return frame

    def _queue_limit(self) -> int:
        return self._gateway.config.outgoing_queue

    def _overflowed(self) -> None:
        self.close(self._session.close(CloseCode.TRY_AGAIN_LATER, retry_after_s=1))

    def close(self, event: CloseConnection) -> None:
        """Decide to close: the writer sends what is queued, then the close frame."""
        if self._closing is not None:
            return
        self._closing = event
        self._gateway.log_close(self, event)
        if self._read_scope is not None:
            self._read_scope.cancel()
        self._wake_writer()
        self._gateway.commands.connection_lost(self)
        if self.channels is not None:
            self.channels.connection_lost()
        self._signal_drained()

    # -- channels -------------------------------------------------------------------------

    def open_channel(
        self,
        kind: str,
        params: ShellParams | TunnelParams,
        requested_by: str | None,
        intent: Mapping[str, Any] | None = None,
    ) -> ServerChannel:
        """Send an ``open``; the channel's handle (its ``wait_accepted`` waits for the
        agent's answer). ``ChannelRefusedError`` when this agent cannot have one now."""
        if not self.speaks(FEATURE_CHANNELS):
            raise ChannelRefusedError(
                "not_supported",
                f"agent {self.agent_id} did not negotiate channels (a protocol v1 or third-party "
                "agent): sessions and tunnels need an agent that speaks them",
            )
        relayed = intent if self.speaks(FEATURE_INTENTS) else None
        return self._channel_book().open(kind, params, requested_by, relayed)

    def _channel_book(self) -> ConnectionChannels:
        if self.channels is None:
            self.channels = ConnectionChannels(self, self._session, self._gateway)
        return self.channels

    # -- the connection's life ------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                self._wake_writer()
                await self._read_loop()
                # Closing, or the peer left: queued frames and the close get a grace period.
                nursery.cancel_scope.deadline = trio.current_time() + CLOSE_GRACE_S
        finally:
            self._nursery = None
            with trio.CancelScope(shield=True):
                await self._gateway.connection_ended(self, self._authenticated)

    async def _read_loop(self) -> None:
        session, receive, replay = self._session, self._receive, self._gateway.replay
        shared = self._gateway.shared_replay
        # Hypercorn's ``receive`` is a memory channel's: take what is already queued without
        # a scheduler round trip per frame (its queue holds at most a few frames). The lean
        # listener's returns what it has parsed at once.
        receive_nowait = getattr(getattr(receive, "__self__", None), "receive_nowait", None)
        while self._closing is None:
            # The deadline is lazy: receipts do not move it (that would cost a heap update per
            # message); when it fires, the session says whether it really passed.
            with trio.CancelScope(deadline=self._trio_deadline()) as scope:
                self._read_scope = scope
                while self._closing is None:
                    try:
                        message: Any = None  # an ASGI message (Hypercorn's, or the lean one)
                        if receive_nowait is not None:
                            try:  # noqa: SIM105 - cheaper than suppress()
                                message = receive_nowait()
                            except trio.WouldBlock:
                                pass  # awaited below, not here: the exception would live on
                        if message is None:
                            message = await receive()
                    except (trio.EndOfChannel, trio.ClosedResourceError):
                        return
                    kind = message["type"]
                    if kind == "websocket.receive" and TOO_BIG in message:
                        # Hypercorn dropped it (asgi.py): say so, with who sent it.
                        reason = f"a frame of {message[TOO_BIG]} bytes, over the limit"
                        error = ProtocolError(CloseCode.MESSAGE_TOO_BIG, reason)
                        self.close(session.fail(error))
                    elif kind == "websocket.receive" and (
                        message.get("text") is None and session.speaks_channels
                    ):
                        # Channel data: paced by its windows and budget, not the CPU share.
                        clock = self._gateway.clock()
                        await self._act(session.receive_channel_data(message["bytes"], clock))
                    elif kind == "websocket.receive":
                        text: str | None = message.get("text")
                        data: str | bytes = (
                            text if text is not None else message.get("bytes") or b""
                        )
                        started = time.perf_counter()
                        if shared is None:
                            events = session.receive(data, self._gateway.clock(), replay)
                            spent = time.perf_counter() - started
                        else:
                            events, spent = await self._receive_shared(data, shared)
                        self._output_kept = False
                        await self._act(events, text or "")
                        if self._authenticated and self._closing is None and not self._output_kept:
                            await self._pay(spent, len(data))
                        # This frame lives as long as the agent: hold no float objects.
                        started = spent = 0
                    elif kind == "websocket.disconnect":  # the agent closed (or vanished: 1006)
                        code = message.get("code", 1006)
                        label = code if code in PEER_CLOSE_CODES else "other"
                        self._gateway.stats[f"peer_closed_{label}"] += 1
                        return
            self._read_scope = None
            if self._closing is None:
                await self._act(session.on_deadline(self._gateway.clock()))

    async def _receive_shared(
        self, data: str | bytes, shared: SharedReplayWindow
    ) -> tuple[list[Event], float]:
        """``ServerSession.receive`` with the nonce checked in the window all nodes share;
        and the seconds the checks took on the event loop (the wait for Redis not)."""
        session, now = self._session, self._gateway.clock()
        started = time.perf_counter()
        try:
            verified = session.verify(data, now)
        except ProtocolError as error:
            return [session.fail(error)], time.perf_counter() - started
        spent = time.perf_counter() - started
        envelope = verified.message.envelope
        verdict = await shared.check(envelope.agent_id, envelope.nonce, envelope.ts, now)
        return session.accept(verified, verdict, now), spent

    async def _pay(self, spent: float, size: int) -> None:
        """Charge the frame's cost to the agent; past its share, stop reading it a while
        (its frames wait in the socket: backpressure, nothing is lost). The time measured
        is wall time, which a busy machine inflates: no frame is charged more than its
        size could cost (a microsecond a character is above the worst found, ~0.35)."""
        gateway = self._gateway
        spent = min(spent, MOST_PER_FRAME_S + size * MOST_PER_CHARACTER_S)
        wait = gateway.workload.charge(self.agent_id, spent, gateway.clock())
        if wait > 0:
            gateway.stats["throttled"] += 1
            await trio.sleep(wait)

    def _trio_deadline(self) -> float:
        deadline_ms = self._session.deadline_ms()
        if deadline_ms is None:
            return math.inf
        return trio.current_time() + (deadline_ms - self._gateway.clock()) / 1000

    async def _act(self, events: list[Event], frame: str = "") -> None:
        """Act on what the session reported about ``frame`` (the text it was fed)."""
        # The handshake: the auth reply (and what follows it) waits until the agent is
        # registered (in a cluster, in Redis), so that an agent that got its reply is
        # listed on every node. Holding the writer queues the frames, in order.
        hold = (
            not self._authenticated
            and not self._writing
            and any(isinstance(event, Authenticated) for event in events)
        )
        if hold:
            self._writing = True
        try:
            await self._act_on(events, frame)
        finally:
            if hold:
                self._writing = False
                self._wake_writer()

    async def _act_on(self, events: list[Event], frame: str) -> None:
        gateway = self._gateway
        spool = gateway.spool
        for event in events:
            match event:
                case SendFrame(text=text):
                    self.send_frame(text)
                case MetricsReceived(envelope=envelope, metrics=metrics, delivery=delivery):
                    gateway.stats["frames_metrics"] += 1
                    agent_id = envelope.agent_id
                    if spool.admit(agent_id, delivery):
                        gateway.sink.metrics(agent_id, envelope.ts, metrics.values, size=len(frame))
                        spool.keep(agent_id, "metrics", frame)
                case LogsReceived(envelope=envelope, batch=batch, delivery=delivery):
                    gateway.stats["frames_log"] += 1
                    agent_id = envelope.agent_id
                    if spool.admit(agent_id, delivery):
                        gateway.sink.logs(agent_id, batch.entries, size=len(frame))
                        spool.keep(agent_id, "log", frame)
                case CommandResultReceived(result=result, delivery=delivery):
                    gateway.stats["frames_command_result"] += 1
                    if spool.admit(self.agent_id, delivery):
                        await gateway.commands.resolve(self, result, size=len(frame) or None)
                case CommandOutputReceived(output=output, delivery=delivery):
                    gateway.stats["frames_command_output"] += 1
                    if spool.admit(self.agent_id, delivery):
                        self._output_kept = await gateway.output.admit(self.agent_id, output)
                case ChannelControlReceived(control=control):
                    self._on_channel(lambda book: book.on_control(control))
                case ChannelDataReceived(frame=data):
                    self._on_channel(lambda book: book.on_data(data))
                case DuplicateDropped():
                    gateway.stats["duplicates"] += 1
                case Authenticated():
                    self._authenticated = True
                    if self._read_scope is not None:  # from the auth deadline to heartbeats
                        self._read_scope.deadline = self._trio_deadline()
                    with trio.CancelScope(shield=True):  # registering is not interruptible
                        await gateway.authenticated(self)
                case CloseConnection():
                    self.close(event)

    def _on_channel(self, act: Callable[[ConnectionChannels], None]) -> None:
        """A channel message or frame; one that breaks the protocol closes the connection."""
        try:
            act(self._channel_book())
        except ProtocolError as error:
            self.close(self._session.fail(error))
