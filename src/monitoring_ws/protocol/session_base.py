"""What both ends of a connection share: sealing frames, verifying, failing, closing."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import attrs

from .channels import ChannelData, Direction, open_data, seal_data
from .envelope import (
    DEFAULT_MAX_AUTH_FRAME_BYTES,
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_FRAME_VALUES,
    TIMESTAMP_WINDOW_MS,
    Message,
    MessageType,
    Sender,
    decode,
    seal,
    verify_signature,
)
from .errors import CloseCode, ProtocolError, close_reason
from .events import ChannelDataReceived, CloseConnection, Event

__all__ = ["Limits", "SessionBase", "Verified"]


@attrs.frozen
class Limits:
    """Limits both ends apply to what they receive."""

    max_frame_bytes: int = DEFAULT_MAX_FRAME_BYTES
    #: JSON values in a frame, counted before parsing (1009): bounds the CPU one costs.
    max_frame_values: int = DEFAULT_MAX_FRAME_VALUES
    #: A server's limit on the first frame, read before it knows who speaks (1009).
    max_auth_frame_bytes: int = DEFAULT_MAX_AUTH_FRAME_BYTES
    timestamp_window_ms: int = TIMESTAMP_WINDOW_MS
    #: Close after this many heartbeat intervals without a verified message (4408).
    missed_heartbeats: int = 3
    #: The first frame (agent: the server's reply) must arrive within this (4408).
    auth_timeout_ms: int = 10_000


@attrs.frozen
class Verified:
    """A frame that passed every check but the nonce: pass it to ``accept``."""

    message: Message
    key: bytes = attrs.field(repr=False)


class SessionBase:
    """State and checks common to ``ServerSession`` and ``AgentSession``."""

    # Slots: a server holds one session per connected agent.
    __slots__ = ("_closed", "_key", "_new_nonce", "duplicates", "last_heard_ms", "limits")
    _peer: Sender

    def __init__(self, limits: Limits, new_nonce: Callable[[], str]) -> None:
        self.limits = limits
        self._new_nonce = new_nonce
        self._key: bytes | None = None
        self._closed = False
        #: Verified messages dropped as duplicates (counted, never processed).
        self.duplicates = 0
        #: When the last verified frame arrived (ms).
        self.last_heard_ms = 0

    @property
    def closed(self) -> bool:
        return self._closed

    def fail(self, error: ProtocolError) -> CloseConnection:
        """Close because of ``error``: the event tells the peer only the public reason."""
        self._closed = True
        return CloseConnection(error.code, error.public_reason, error.reason)

    def close(self, code: CloseCode, retry_after_s: int | None = None) -> CloseConnection:
        """Close on this side's initiative (shutdown 1001, replacement 4409, ...)."""
        self._closed = True
        return CloseConnection(code, close_reason(code, retry_after_s))

    # -- the ``channels`` extension ---------------------------------------------------------

    def _channel_binding(self) -> tuple[bytes, str, Direction, Direction]:
        """Key, sessionId, the direction this end sends and the one it receives."""
        raise RuntimeError("channels were not negotiated")

    def seal_channel_data(self, channel_id: int, seq: int, data: bytes) -> bytes:
        """A binary data frame of channel ``channel_id`` (docs/protocol.md 11.6)."""
        key, session_id, outgoing, _ = self._channel_binding()
        return seal_data(key, session_id, outgoing, channel_id=channel_id, seq=seq, data=data)

    def receive_channel_data(self, frame: bytes, now_ms: int) -> list[Event]:
        """Feed a binary frame: ``ChannelDataReceived``, or the close (1003 when channels
        were not negotiated, 1009, 4400, 4401 for a frame that fails its checks)."""
        if self._closed:
            raise RuntimeError("the session is closed")
        try:
            key, session_id, _, incoming = self._channel_binding()
        except RuntimeError:
            return [self.fail(ProtocolError(CloseCode.UNSUPPORTED_DATA, "binary frame"))]
        try:
            data: ChannelData = open_data(key, session_id, incoming, bytes(frame))
        except ProtocolError as error:
            return [self.fail(error)]
        self.last_heard_ms = now_ms
        return [ChannelDataReceived(data)]

    def _decode_and_verify(
        self,
        data: str | bytes,
        peer_now_ms: int,
        agent_id: str | None,
        keys: Callable[[Message], tuple[bytes, ...]],
        *,
        check_ts: bool = True,
        max_bytes: int | None = None,
    ) -> Verified:
        if self._closed:
            raise RuntimeError("the session is closed")
        if isinstance(data, bytes | bytearray | memoryview):
            raise ProtocolError(CloseCode.UNSUPPORTED_DATA, "binary frame")
        limits = self.limits
        message = decode(
            data,
            sender=self._peer,
            agent_id=agent_id,
            max_bytes=limits.max_frame_bytes if max_bytes is None else max_bytes,
            max_values=limits.max_frame_values,
            now_ms=peer_now_ms if check_ts else None,
            window_ms=limits.timestamp_window_ms,
        )
        return Verified(message, verify_signature(message, keys(message)))

    def _seal(
        self,
        kind: MessageType,
        agent_id: str,
        payload: Mapping[str, Any],
        ts: int,
        nonce: str | None = None,
    ) -> str:
        if self._key is None or self._closed:
            raise RuntimeError("the session is not open")
        nonce = self._new_nonce() if nonce is None else nonce
        envelope = seal(kind, agent_id, payload, key=self._key, ts=ts, nonce=nonce)
        return envelope.to_frame()
