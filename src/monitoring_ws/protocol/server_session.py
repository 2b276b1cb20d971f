"""The server's side of one agent connection, as a state machine fed frames and times.

The I/O shell is a loop: read a frame, ``receive`` it (or ``verify``, check the nonce
where the window lives, then ``accept``), act on the events; when ``deadline_ms`` passes,
act on ``on_deadline``. Nothing here reads a clock or a socket.
"""

from __future__ import annotations

import enum
from collections.abc import Callable

import attrs

from .channel_control import ChannelControl
from .channels import FEATURE_CHANNELS, Direction
from .delivery import FEATURE_ACK, Cancel
from .envelope import Message, MessageType, Sender
from .errors import CloseCode, ProtocolError
from .events import (
    Authenticated,
    ChannelControlReceived,
    CommandOutputReceived,
    CommandResultReceived,
    DuplicateDropped,
    Event,
    HeartbeatReceived,
    LogsReceived,
    MetricsReceived,
    SendFrame,
    random_nonce,
)
from .keys import Keyring
from .output import FEATURE_OUTPUT, CommandOutput
from .payloads import (
    AuthHello,
    AuthReply,
    Command,
    CommandResult,
    Delivery,
    Heartbeat,
    HeartbeatReply,
    LogBatch,
    Metrics,
    delivery_of,
)
from .ratelimit import RateLimit, RateMeter
from .replay import ReplayVerdict, ReplayWindow
from .session_base import Limits, SessionBase, Verified

__all__ = ["ServerConfig", "ServerSession", "ServerState"]


#: The types that carry a ``delivery`` number under the ``ack`` extension.
_NUMBERED = frozenset(
    {
        MessageType.METRICS,
        MessageType.LOG,
        MessageType.COMMAND_RESULT,
        MessageType.COMMAND_OUTPUT,
    }
)


#: The shared replay window cannot answer and fails closed: the agent comes back later
#: (its unacknowledged messages wait in its outbox).
_UNCHECKABLE = ProtocolError(CloseCode.TRY_AGAIN_LATER, "the replay window is unavailable", 5)


class ServerState(enum.Enum):
    """Where the connection is (docs/protocol.md, "Handshake")."""

    #: Upgraded; the first frame must be a signed ``auth`` before the auth deadline.
    AWAITING_AUTH = "awaiting_auth"
    #: Authenticated: data flows, heartbeats keep it alive.
    OPEN = "open"
    #: A close was decided; feed nothing more.
    CLOSED = "closed"


@attrs.frozen
class ServerConfig:
    """What the server offers each connection."""

    heartbeat_interval_ms: int = 30_000
    #: Protocol extensions this server speaks; the reply lists those the agent also asked for.
    features: frozenset[str] = frozenset()
    limits: Limits = attrs.field(factory=Limits)
    #: Each agent's messages and bytes per second after auth (None: unlimited).
    rate_limit: RateLimit | None = None
    #: With the ``output`` extension: the bytes per second of ``command_output`` each
    #: agent may send, apart from ``rate_limit``'s bytes (announced in the auth reply).
    output_rate: RateLimit | None = None


class ServerSession(SessionBase):
    """One connection, server side."""

    __slots__ = (
        "_auth_deadline_ms",
        "_gate",
        "_generation_of",
        "_meter",
        "_numbered",
        "_output_meter",
        "_speaks_channels",
        "_speaks_output",
        "_stream",
        "acked",
        "agent_id",
        "claimed_agent_id",
        "closes_at_ms",
        "config",
        "features",
        "hello",
        "keyring",
        "opened_at_ms",
        "session_id",
    )
    _peer = Sender.AGENT

    def __init__(
        self,
        keyring: Keyring,
        *,
        opened_at_ms: int,
        session_id: str,
        config: ServerConfig = ServerConfig(),
        new_nonce: Callable[[], str] = random_nonce,
        gate: Callable[[str], ProtocolError | None] | None = None,
        generation_of: Callable[[str], str | None] | None = None,
        lifetime_ms: int | None = None,
        auth_extra_ms: int = 0,
    ) -> None:
        super().__init__(config.limits, new_nonce)
        #: Asked with the agentId a first frame claims, before its signature is checked: an
        #: error closes the connection (4429 for an agent id that failed too often from
        #: this address, 4401 for a revoked one).
        self._gate = gate
        #: An enrolled agent's key generation (None: never enrolled, its key is derived
        #: from the id alone); asked after the gate, before the signature is checked.
        self._generation_of = generation_of
        #: The first frame must come by then: the auth timeout, never less (the protocol's
        #: 10 s), plus ``auth_extra_ms`` (a shell spreads sockets opened at once this way).
        self._auth_deadline_ms: int | None = (
            opened_at_ms + config.limits.auth_timeout_ms + max(0, auth_extra_ms)
        )
        #: When an open session ends with 1001 and a retry hint, so that rotated secrets
        #: and revocations reach every agent (None: never).
        self.closes_at_ms = None if lifetime_ms is None else opened_at_ms + lifetime_ms
        #: The agentId the first frame claimed, once it decoded (for failure accounting).
        self.claimed_agent_id: str | None = None
        self._meter: RateMeter | None = None
        self._output_meter: RateMeter | None = None
        self._speaks_output = False
        self._speaks_channels = False
        self.keyring = keyring
        self.config = config
        self.session_id = session_id
        self.opened_at_ms = opened_at_ms
        self.agent_id: str | None = None
        self.hello: AuthHello | None = None
        self.features: tuple[str, ...] = ()
        self.last_heard_ms = opened_at_ms
        #: With ``ack``: the agent's stored mark, repeated in every heartbeat answer.
        self.acked: Delivery | None = None
        self._numbered = False
        self._stream: str | None = None

    @property
    def state(self) -> ServerState:
        if self._closed:
            return ServerState.CLOSED
        return ServerState.AWAITING_AUTH if self.agent_id is None else ServerState.OPEN

    def deadline_ms(self) -> int | None:
        """When ``on_deadline`` must be called next (None once closed)."""
        state = self.state
        if state is ServerState.AWAITING_AUTH:
            return self._auth_deadline_ms
        if state is ServerState.OPEN:
            silence = self.limits.missed_heartbeats * self.config.heartbeat_interval_ms
            if self.closes_at_ms is None:
                return self.last_heard_ms + silence
            return min(self.last_heard_ms + silence, self.closes_at_ms)
        return None

    def on_deadline(self, now_ms: int) -> list[Event]:
        """Close with 4408 if the auth deadline or the heartbeat allowance has passed."""
        deadline = self.deadline_ms()
        if deadline is None or now_ms < deadline:
            return []
        closes_at = self.closes_at_ms
        if self.agent_id is not None and closes_at is not None and now_ms >= closes_at:
            # The agent reconnects at once (after its jitter) and authenticates afresh.
            return [self.close(CloseCode.GOING_AWAY, retry_after_s=1)]
        what = "no auth frame" if self.agent_id is None else "no message"
        waited = now_ms - (self.opened_at_ms if self.agent_id is None else self.last_heard_ms)
        return [self.fail(ProtocolError(CloseCode.TIMEOUT, f"{what} for {waited} ms"))]

    def receive(self, data: str | bytes, now_ms: int, replay: ReplayWindow) -> list[Event]:
        """Feed one frame (``bytes`` means a binary frame) with an in-process window."""
        if isinstance(data, bytes) and self._speaks_channels:
            return self.receive_channel_data(data, now_ms)
        try:
            verified = self.verify(data, now_ms)
        except ProtocolError as error:
            return [self.fail(error)]
        envelope = verified.message.envelope
        verdict = replay.check(envelope.agent_id, envelope.nonce, envelope.ts, now_ms)
        return self.accept(verified, verdict, now_ms)

    def verify(self, data: str | bytes, now_ms: int) -> Verified:
        """Every check but the nonce; raises ``ProtocolError`` (then call ``fail``)."""
        if self.agent_id is None:
            limits = self.limits
            return self._decode_and_verify(
                data,
                now_ms,
                None,
                self._candidate_keys,
                max_bytes=min(limits.max_auth_frame_bytes, limits.max_frame_bytes),
            )
        meter = self._meter
        if meter is not None:
            retry = meter.take(len(data), now_ms)
            if retry is not None:
                raise ProtocolError(CloseCode.TOO_MANY_ATTEMPTS, "over the rate limit", retry)
        verified = self._decode_and_verify(data, now_ms, self.agent_id, self._session_key)
        rate = self.config.output_rate
        if (
            self._speaks_output
            and rate is not None
            and verified.message.envelope.type is MessageType.COMMAND_OUTPUT
        ):
            output_meter = self._output_meter
            if output_meter is None:  # made at the first chunk: most agents never stream
                output_meter = self._output_meter = RateMeter(rate, now_ms)
            # Output has its own budget: its bytes go back to the one every frame pays.
            if meter is not None:
                meter.refund(len(data))
            retry = output_meter.take(len(data), now_ms)
            if retry is not None:
                reason = "over the output budget (outputBytesPerS)"
                raise ProtocolError(CloseCode.TOO_MANY_ATTEMPTS, reason, retry)
        return verified

    def _candidate_keys(self, message: Message) -> tuple[bytes, ...]:
        agent_id = message.envelope.agent_id
        self.claimed_agent_id = agent_id
        if self._gate is not None:
            refused = self._gate(agent_id)
            if refused is not None:
                raise refused
        lookup = self._generation_of
        return self.keyring.keys_for(agent_id, None if lookup is None else lookup(agent_id))

    def _session_key(self, _message: Message) -> tuple[bytes, ...]:
        assert self._key is not None  # noqa: S101 - set together with agent_id
        return (self._key,)

    def accept(self, verified: Verified, verdict: ReplayVerdict, now_ms: int) -> list[Event]:
        """Act on a verified frame given the replay window's verdict on its nonce."""
        if verdict is ReplayVerdict.UNAVAILABLE:
            return [self.fail(_UNCHECKABLE)]
        if self.agent_id is None:
            return self._handshake(verified, verdict, now_ms)
        message = verified.message
        envelope, body = message.envelope, message.body
        if verdict is ReplayVerdict.DUPLICATE:
            self.duplicates += 1
            return [DuplicateDropped(envelope)]
        if verdict is ReplayVerdict.STALE:
            return [self.fail(ProtocolError(CloseCode.AUTH_FAILED, "ts outside the window"))]
        self.last_heard_ms = now_ms
        delivery = None
        if self._numbered and envelope.type in _NUMBERED:
            try:
                delivery = delivery_of(envelope.payload, self._stream)
            except ProtocolError as error:
                return [self.fail(error)]
            if delivery is not None:
                self._stream = delivery.stream  # checked once; an agent keeps one stream
        match body:
            case Metrics():
                if delivery is not None:  # the number is not a metric
                    values = dict(body.values)
                    del values["delivery"]
                    body = Metrics(values)
                return [MetricsReceived(envelope, body, delivery)]
            case LogBatch():
                return [LogsReceived(envelope, body, delivery)]
            case CommandResult():
                return [CommandResultReceived(envelope, body, delivery)]
            case CommandOutput() if self._speaks_output:
                return [CommandOutputReceived(envelope, body, delivery)]
            case ChannelControl() if self._speaks_channels:
                return [ChannelControlReceived(envelope, body)]
            case Heartbeat():
                reply = HeartbeatReply(now_ms, self.acked).to_payload()
                frame = self._seal(MessageType.HEARTBEAT, envelope.agent_id, reply, now_ms)
                return [HeartbeatReceived(envelope, body), SendFrame(frame)]
        reason = f"an agent may not send {envelope.type.value!r} now"
        return [self.fail(ProtocolError(CloseCode.MALFORMED, reason))]

    def _handshake(self, verified: Verified, verdict: ReplayVerdict, now_ms: int) -> list[Event]:
        envelope, hello = verified.message.envelope, verified.message.body
        if verdict is not ReplayVerdict.NEW:
            return [self.fail(ProtocolError(CloseCode.AUTH_FAILED, f"auth nonce {verdict.value}"))]
        if not isinstance(hello, AuthHello):
            reason = f"first frame is {envelope.type.value!r}, not 'auth'"
            return [self.fail(ProtocolError(CloseCode.AUTH_FAILED, reason))]
        self.agent_id, self.hello, self._key = envelope.agent_id, hello, verified.key
        self.features = tuple(
            sorted(self.config.features.intersection(hello.capabilities.features))
        )
        self._numbered = FEATURE_ACK in self.features
        output = FEATURE_OUTPUT in self.features
        self._speaks_output = output
        self._speaks_channels = FEATURE_CHANNELS in self.features
        self.last_heard_ms = now_ms
        # Only first frames pass these; an open session holds no more.
        self._gate = self._generation_of = self._auth_deadline_ms = None
        if self.config.rate_limit is not None:
            self._meter = RateMeter(self.config.rate_limit, now_ms)
        output_rate = self.config.output_rate if output else None
        reply = AuthReply(
            session_id=self.session_id,
            server_time=now_ms,
            heartbeat_interval_ms=self.config.heartbeat_interval_ms,
            features=self.features,
            auth_nonce=envelope.nonce,
            max_frame_bytes=self.limits.max_frame_bytes,
            output_bytes_per_s=None if output_rate is None else int(output_rate.bytes_per_s),
        )
        frame = self._seal(MessageType.AUTH, envelope.agent_id, reply.to_payload(), now_ms)
        # The reply goes first: what the shell sends on ``Authenticated`` (acks, commands
        # left open) must follow it.
        return [
            SendFrame(frame),
            Authenticated(envelope.agent_id, self.session_id, hello, self.features),
        ]

    def command(self, command: Command, now_ms: int) -> str:
        """The signed ``command`` frame to send (the session must be open)."""
        if self.agent_id is None:
            raise RuntimeError("the session is not open")
        return self._seal(MessageType.COMMAND, self.agent_id, command.to_payload(), now_ms)

    def ack(self, mark: Delivery, now_ms: int) -> str:
        """The signed ``ack`` frame for ``mark`` (also kept for heartbeat answers)."""
        if self.agent_id is None:
            raise RuntimeError("the session is not open")
        self.acked = mark
        return self._seal(MessageType.ACK, self.agent_id, mark.to_payload(), now_ms)

    @property
    def speaks_channels(self) -> bool:
        """The agent negotiated ``channels``: binary frames are channel data."""
        return self._speaks_channels

    def _channel_binding(self) -> tuple[bytes, str, Direction, Direction]:
        if not self._speaks_channels or self._key is None:
            raise RuntimeError("channels were not negotiated")
        return self._key, self.session_id, Direction.SERVER_TO_AGENT, Direction.AGENT_TO_SERVER

    def channel(self, control: ChannelControl, now_ms: int) -> str:
        """The signed ``channel`` frame for ``control``."""
        if self.agent_id is None or not self._speaks_channels:
            raise RuntimeError("channels were not negotiated")
        return self._seal(MessageType.CHANNEL, self.agent_id, control.to_payload(), now_ms)

    def cancel(self, command_id: str, now_ms: int) -> str:
        """The signed ``cancel`` frame for a command sent earlier."""
        if self.agent_id is None:
            raise RuntimeError("the session is not open")
        payload = Cancel(command_id).to_payload()
        return self._seal(MessageType.CANCEL, self.agent_id, payload, now_ms)
