"""The agent's side of a connection, as a state machine fed frames and times.

The agent signs every message, verifies every server frame (it runs no command whose
signature does not verify), keeps its timestamps on the server's clock through
``clock_offset_ms``, and sends a heartbeat every interval the server chose.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from .channel_control import ChannelControl
from .channels import FEATURE_CHANNELS, Direction
from .delivery import Cancel
from .envelope import BODIES, Message, MessageType, Sender, check_timestamp
from .errors import CloseCode, ProtocolError
from .events import (
    AckReceived,
    AuthAccepted,
    CancelReceived,
    ChannelControlReceived,
    CommandReceived,
    DuplicateDropped,
    Event,
    HeartbeatAnswered,
    SendFrame,
    random_nonce,
)
from .payloads import (
    AuthHello,
    AuthReply,
    Command,
    CommandResult,
    Delivery,
    HeartbeatReply,
    LogEntry,
)
from .replay import MemoryReplayWindow, ReplayVerdict, ReplayWindow
from .session_base import Limits, SessionBase, Verified

__all__ = ["AgentConfig", "AgentSession", "AgentState"]


class AgentState(enum.Enum):
    """Where the connection is (docs/protocol.md, "Handshake")."""

    #: Connected, ``start`` not yet called.
    IDLE = "idle"
    #: ``auth`` sent; waiting for the server's signed reply before the auth deadline.
    AWAITING_REPLY = "awaiting_reply"
    #: Accepted: send data, heartbeat every interval, answer commands.
    OPEN = "open"
    #: A close was decided; feed nothing more.
    CLOSED = "closed"


@attrs.frozen
class AgentConfig:
    """Agent-side limits; the heartbeat interval itself comes from the server."""

    limits: Limits = attrs.field(factory=Limits)
    #: Floor on the server-chosen heartbeat interval, so a bad value cannot make a flood.
    min_heartbeat_interval_ms: int = 100


class AgentSession(SessionBase):
    """One connection, agent side."""

    __slots__ = (
        "_auth_nonce",
        "_auth_offset_ms",
        "_replay",
        "agent_id",
        "clock_offset_ms",
        "config",
        "hello",
        "next_heartbeat_ms",
        "reply",
        "started_at_ms",
    )
    _peer = Sender.SERVER

    def __init__(
        self,
        *,
        agent_id: str,
        key: bytes,
        hello: AuthHello,
        config: AgentConfig = AgentConfig(),
        clock_offset_ms: int = 0,
        new_nonce: Callable[[], str] = random_nonce,
        replay: ReplayWindow | None = None,
    ) -> None:
        super().__init__(config.limits, new_nonce)
        self.agent_id = agent_id
        self.hello = hello
        self.config = config
        self._key = key
        #: Added to the local clock to get the server's: learned from ``serverTime``.
        self.clock_offset_ms = clock_offset_ms
        #: Added to the ``auth`` frame's ``ts`` only: a clock from an unauthenticated source.
        self._auth_offset_ms = 0
        self._replay = (
            MemoryReplayWindow(config.limits.timestamp_window_ms) if replay is None else replay
        )
        self._auth_nonce: str | None = None
        self.reply: AuthReply | None = None
        self.started_at_ms = 0
        self.last_heard_ms = 0
        self.next_heartbeat_ms = 0

    @property
    def state(self) -> AgentState:
        if self._closed:
            return AgentState.CLOSED
        if self._auth_nonce is None:
            return AgentState.IDLE
        return AgentState.AWAITING_REPLY if self.reply is None else AgentState.OPEN

    @property
    def heartbeat_interval_ms(self) -> int | None:
        if self.reply is None:
            return None
        return max(self.reply.heartbeat_interval_ms, self.config.min_heartbeat_interval_ms)

    def adjust_clock(
        self, server_time_ms: int, local_now_ms: int, *, authenticated: bool = True
    ) -> None:
        """Take the server's clock (e.g. from the upgrade response's ``Date``) before
        ``start``. Unless it came over a channel that proves the server (TLS), it only stamps
        the ``auth`` frame: frames are still checked against the local clock until the
        signed ``serverTime`` arrives, so a man in the middle who sets it cannot make old
        captured frames look fresh (at worst the server refuses the ``auth``)."""
        if authenticated:
            self.clock_offset_ms = server_time_ms - local_now_ms
        else:
            self._auth_offset_ms = server_time_ms - local_now_ms

    def start(self, now_ms: int) -> str:
        """The ``auth`` frame: send it first."""
        if self.state is not AgentState.IDLE:
            raise RuntimeError("start() was already called")
        nonce = self._new_nonce()
        self._auth_nonce = nonce
        self.started_at_ms = now_ms
        payload = self.hello.to_payload()
        return self._seal_with_nonce(
            MessageType.AUTH, payload, now_ms + self._auth_offset_ms, nonce
        )

    def deadline_ms(self) -> int | None:
        """When ``on_deadline`` must be called next (None when idle or closed)."""
        state = self.state
        if state is AgentState.AWAITING_REPLY:
            return self.started_at_ms + self.limits.auth_timeout_ms
        if state is AgentState.OPEN:
            return min(self.next_heartbeat_ms, self._silence_deadline_ms())
        return None

    def _silence_deadline_ms(self) -> int:
        interval = self.heartbeat_interval_ms or 0
        return self.last_heard_ms + self.limits.missed_heartbeats * interval

    def on_deadline(self, now_ms: int) -> list[Event]:
        """Send a due heartbeat; close with 4408 if the server stayed silent too long."""
        state = self.state
        if state is AgentState.AWAITING_REPLY:
            if now_ms < self.started_at_ms + self.limits.auth_timeout_ms:
                return []
            return [self.fail(ProtocolError(CloseCode.TIMEOUT, "no auth reply"))]
        if state is not AgentState.OPEN:
            return []
        if now_ms >= self._silence_deadline_ms():
            waited = now_ms - self.last_heard_ms
            return [self.fail(ProtocolError(CloseCode.TIMEOUT, f"server silent for {waited} ms"))]
        if now_ms >= self.next_heartbeat_ms:
            return [SendFrame(self.heartbeat(now_ms))]
        return []

    def receive(self, data: str | bytes, now_ms: int) -> list[Event]:
        """Feed one frame from the server (``bytes`` means a binary frame)."""
        if self.state is AgentState.IDLE:
            raise RuntimeError("call start() first")
        if isinstance(data, bytes) and self.speaks_channels:
            return self.receive_channel_data(data, now_ms)
        server_now = now_ms + self.clock_offset_ms
        try:
            # The auth reply is bound to this connection by echoing our auth nonce, so it
            # needs no trust in our clock: it is what sets the clock.
            verified = self._decode_and_verify(
                data, server_now, self.agent_id, self._keys, check_ts=self.reply is not None
            )
        except ProtocolError as error:
            return [self.fail(error)]
        envelope = verified.message.envelope
        verdict = self._replay.check(envelope.agent_id, envelope.nonce, envelope.ts, server_now)
        return self._accept(verified, verdict, now_ms)

    def _keys(self, _message: Message) -> tuple[bytes, ...]:
        assert self._key is not None  # noqa: S101 - an agent always holds its key
        return (self._key,)

    def _accept(self, verified: Verified, verdict: ReplayVerdict, now_ms: int) -> list[Event]:
        envelope, body = verified.message.envelope, verified.message.body
        if self.reply is None:
            if not isinstance(body, AuthReply) or body.auth_nonce not in {None, self._auth_nonce}:
                reason = "first server frame is not the reply to our auth"
                return [self.fail(ProtocolError(CloseCode.AUTH_FAILED, reason))]
            if body.auth_nonce is None:
                # A protocol v1 server that does not echo our nonce: the reply is fresh
                # only if its ts is, like any frame's (and its nonce new, checked below).
                try:
                    check_timestamp(
                        envelope.ts, now_ms + self.clock_offset_ms, self.limits.timestamp_window_ms
                    )
                except ProtocolError as error:
                    return [self.fail(error)]
                if verdict is not ReplayVerdict.NEW:
                    reason = f"auth reply nonce {verdict.value}"
                    return [self.fail(ProtocolError(CloseCode.AUTH_FAILED, reason))]
            self.reply = body
            self.clock_offset_ms = body.server_time - now_ms
            self.last_heard_ms = now_ms
            self.next_heartbeat_ms = now_ms + (self.heartbeat_interval_ms or 0)
            return [AuthAccepted(body)]
        if verdict is ReplayVerdict.DUPLICATE:
            self.duplicates += 1
            return [DuplicateDropped(envelope)]
        if verdict is ReplayVerdict.STALE:
            return [self.fail(ProtocolError(CloseCode.AUTH_FAILED, "ts outside the window"))]
        self.last_heard_ms = now_ms
        match body:
            case Command():
                return [CommandReceived(envelope, body)]
            case HeartbeatReply():
                answered: list[Event] = [HeartbeatAnswered(body.server_time)]
                return answered if body.ack is None else [*answered, AckReceived(body.ack)]
            case Delivery():  # an ``ack``
                return [AckReceived(body)]
            case Cancel():
                return [CancelReceived(body.command_id)]
            case ChannelControl() if self.speaks_channels:
                return [ChannelControlReceived(envelope, body)]
        reason = f"a server may not send {envelope.type.value!r} now"
        return [self.fail(ProtocolError(CloseCode.MALFORMED, reason))]

    @property
    def speaks_channels(self) -> bool:
        """The server agreed to ``channels``: binary frames are channel data."""
        reply = self.reply
        return reply is not None and FEATURE_CHANNELS in reply.features

    def _channel_binding(self) -> tuple[bytes, str, Direction, Direction]:
        reply = self.reply
        if reply is None or not self.speaks_channels or self._key is None:
            raise RuntimeError("channels were not negotiated")
        return self._key, reply.session_id, Direction.AGENT_TO_SERVER, Direction.SERVER_TO_AGENT

    def channel(self, control: ChannelControl, now_ms: int) -> str:
        """The signed ``channel`` frame for ``control``."""
        if not self.speaks_channels:
            raise RuntimeError("channels were not negotiated")
        return self._seal_now(MessageType.CHANNEL, control.to_payload(), now_ms)

    def heartbeat(self, now_ms: int, values: Mapping[str, Any] | None = None) -> str:
        """A ``heartbeat`` frame; the next one falls due an interval later."""
        self.next_heartbeat_ms = now_ms + (self.heartbeat_interval_ms or 0)
        return self._seal_now(MessageType.HEARTBEAT, dict(values or {}), now_ms)

    def metrics(self, values: Mapping[str, Any], now_ms: int) -> str:
        """A ``metrics`` frame."""
        return self._seal_now(MessageType.METRICS, values, now_ms)

    def logs(self, entries: Iterable[LogEntry], now_ms: int) -> str:
        """A ``log`` frame."""
        payload = {"entries": [entry.to_payload() for entry in entries]}
        return self._seal_now(MessageType.LOG, payload, now_ms)

    def command_result(self, result: CommandResult, now_ms: int) -> str:
        """A ``command_result`` frame."""
        return self._seal_now(MessageType.COMMAND_RESULT, result.to_payload(), now_ms)

    def message(self, kind: MessageType, payload: Mapping[str, Any], now_ms: int) -> str:
        """A frame of any type an agent sends after ``auth``, from its JSON payload.

        The payload is checked against its schema here, so a bad one fails on this side.
        """
        schema = BODIES[Sender.AGENT].get(kind)
        if schema is None or kind is MessageType.AUTH:
            raise ValueError(f"an agent does not send {kind.value!r} here")
        schema.from_payload(payload)
        return self._seal_now(kind, payload, now_ms)

    def _seal_now(self, kind: MessageType, payload: Mapping[str, Any], now_ms: int) -> str:
        if self.state is AgentState.IDLE:
            raise RuntimeError("call start() first")
        return self._seal_with_nonce(kind, payload, now_ms, self._new_nonce())

    def _seal_with_nonce(
        self, kind: MessageType, payload: Mapping[str, Any], now_ms: int, nonce: str
    ) -> str:
        return self._seal(kind, self.agent_id, payload, now_ms + self.clock_offset_ms, nonce)
