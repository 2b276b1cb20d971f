"""What a session reports after it is fed a frame or a deadline: events for the shell."""

from __future__ import annotations

import os

import attrs

from .channel_control import ChannelControl
from .channels import ChannelData
from .envelope import Envelope
from .errors import CloseCode
from .output import CommandOutput
from .payloads import (
    AuthHello,
    AuthReply,
    Command,
    CommandResult,
    Delivery,
    Heartbeat,
    LogBatch,
    Metrics,
)

__all__ = [
    "AckReceived",
    "AuthAccepted",
    "Authenticated",
    "CancelReceived",
    "ChannelControlReceived",
    "ChannelDataReceived",
    "CloseConnection",
    "CommandOutputReceived",
    "CommandReceived",
    "CommandResultReceived",
    "DuplicateDropped",
    "Event",
    "HeartbeatAnswered",
    "HeartbeatReceived",
    "LogsReceived",
    "MetricsReceived",
    "SendFrame",
    "random_nonce",
]


# A version 4 UUID's fixed bits (RFC 9562): the version nibble and the variant's two bits.
_UUID4_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
_UUID4_SET = (0x4000 << 64) | (0x8000 << 48)


def random_nonce() -> str:
    """A fresh UUID4 nonce (from the OS's CSPRNG), as ``str(uuid.uuid4())`` spells it but
    without building a ``UUID`` object (twice per command on the server's hot path)."""
    digits = f"{int.from_bytes(os.urandom(16), 'big') & _UUID4_CLEAR | _UUID4_SET:032x}"
    return f"{digits[:8]}-{digits[8:12]}-{digits[12:16]}-{digits[16:20]}-{digits[20:]}"


@attrs.frozen
class SendFrame:
    """Write this text frame to the peer."""

    text: str


@attrs.frozen
class CloseConnection:
    """Close the WebSocket with ``code`` and ``reason``; ``detail`` is for logs only."""

    code: CloseCode
    reason: str
    detail: str = ""


@attrs.frozen
class DuplicateDropped:
    """A verified message whose nonce was already seen: dropped without effect."""

    envelope: Envelope


# Server side: what an agent did.


@attrs.frozen
class Authenticated:
    """The handshake succeeded; the session is open."""

    agent_id: str
    session_id: str
    hello: AuthHello
    features: tuple[str, ...]


@attrs.frozen
class MetricsReceived:
    envelope: Envelope
    metrics: Metrics
    #: With the ``ack`` extension: the message's place in the agent's outbox.
    delivery: Delivery | None = None


@attrs.frozen
class LogsReceived:
    envelope: Envelope
    batch: LogBatch
    #: With the ``ack`` extension: the message's place in the agent's outbox.
    delivery: Delivery | None = None


@attrs.frozen
class CommandResultReceived:
    envelope: Envelope
    result: CommandResult
    #: With the ``ack`` extension: the message's place in the agent's outbox.
    delivery: Delivery | None = None


@attrs.frozen
class CommandOutputReceived:
    """A chunk of a running command's output (the ``output`` extension)."""

    envelope: Envelope
    output: CommandOutput
    #: With the ``ack`` extension: the message's place in the agent's outbox.
    delivery: Delivery | None = None


@attrs.frozen
class ChannelControlReceived:
    """A verified ``channel`` message (the ``channels`` extension)."""

    envelope: Envelope
    control: ChannelControl


@attrs.frozen
class ChannelDataReceived:
    """A verified binary data frame of a channel (its seq and window not yet checked)."""

    frame: ChannelData


@attrs.frozen
class HeartbeatReceived:
    """An agent heartbeat; the session has already queued the signed answer."""

    envelope: Envelope
    heartbeat: Heartbeat


# Agent side: what the server did.


@attrs.frozen
class AuthAccepted:
    """The server accepted the handshake; the session is open."""

    reply: AuthReply


@attrs.frozen
class CommandReceived:
    """A verified command to run (at most once per ``commandId``: that is the agent's job)."""

    envelope: Envelope
    command: Command


@attrs.frozen
class HeartbeatAnswered:
    server_time: int


@attrs.frozen
class AckReceived:
    """The server stored every message of ``ack.stream`` up to ``ack.seq``: forget them."""

    ack: Delivery


@attrs.frozen
class CancelReceived:
    """The server asks to stop a command (it is answered with error ``cancelled``)."""

    command_id: str


Event = (
    SendFrame
    | CloseConnection
    | DuplicateDropped
    | Authenticated
    | MetricsReceived
    | LogsReceived
    | CommandResultReceived
    | CommandOutputReceived
    | ChannelControlReceived
    | ChannelDataReceived
    | HeartbeatReceived
    | AuthAccepted
    | CommandReceived
    | HeartbeatAnswered
    | AckReceived
    | CancelReceived
)
