"""Channel data frames (the ``channels`` extension, docs/protocol.md 11.6, a draft): the
bytes of a shell or a tunnel, carried as binary WebSocket frames beside the JSON envelopes.

Canonical JSON costs about a microsecond a byte (a 64 KiB chunk of output: ~1 ms each
way); a tunnel moving tens of MB/s cannot pay that. A data frame is therefore a fixed
binary header, the raw bytes, and an HMAC-SHA256 over both, bound to the connection's
``sessionId`` and the direction, so a frame is valid once, on one connection, one way:

    offset  size  field
    0       1     version (1)
    1       1     direction: 1 server to agent, 2 agent to server
    2       4     channel id, unsigned big-endian
    6       8     seq, unsigned big-endian: 1, 2, 3... per channel and direction
    14      n     data (0 to MAX_DATA bytes; 0 only as the sender's end of data)
    14+n    32    HMAC-SHA256(agent key, "monitoring-ws/channel/v1" 0x00 sessionId 0x00
                  bytes 0 to 14+n)

``ChannelWindow`` is the flow control of one channel and direction (SSH's windows): the
receiver grants bytes, the sender spends them, a frame past the grant is a violation.
``ChannelTable`` is one end's book of a connection's channels: their windows, who may
send what, what counts as a violation. The JSON ``channel`` messages that open, grant and
close channels are ``channel_control.py``. No I/O here.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct
from collections.abc import Mapping
from typing import Any

import attrs

from .channel_control import ChannelControl, ShellParams, TunnelParams
from .errors import CloseCode, ProtocolError

__all__ = [
    "FEATURE_CHANNELS",
    "HEADER_BYTES",
    "MAX_DATA",
    "TAG_BYTES",
    "ChannelClosed",
    "ChannelData",
    "ChannelTable",
    "ChannelViolation",
    "ChannelWindow",
    "Direction",
    "SendWindow",
    "open_data",
    "seal_data",
]

FEATURE_CHANNELS = "channels"
VERSION = 1
_HEADER = struct.Struct(">BBIQ")
HEADER_BYTES = _HEADER.size  # 14
TAG_BYTES = 32
#: The most data one frame carries (a frame stays far under the 1 MiB frame limit).
MAX_DATA = 256 << 10
_CONTEXT = b"monitoring-ws/channel/v1\x00"
_MAX_CHANNEL = 2**32 - 1
_MAX_SEQ = 2**64 - 1


class Direction(enum.IntEnum):
    SERVER_TO_AGENT = 1
    AGENT_TO_SERVER = 2


@attrs.frozen
class ChannelData:
    """A verified data frame."""

    channel_id: int
    seq: int
    data: bytes


def _tag(key: bytes, session_id: str, signed: bytes) -> bytes:
    mac = hmac.new(key, _CONTEXT, hashlib.sha256)
    mac.update(session_id.encode("utf-8") + b"\x00")
    mac.update(signed)
    return mac.digest()


def seal_data(
    key: bytes, session_id: str, direction: Direction, *, channel_id: int, seq: int, data: bytes
) -> bytes:
    """The binary frame for ``data``; ValueError for a field out of range."""
    if not 0 <= channel_id <= _MAX_CHANNEL or not 1 <= seq <= _MAX_SEQ:
        raise ValueError("channel id or seq out of range")
    if len(data) > MAX_DATA:
        raise ValueError(f"at most {MAX_DATA} bytes a frame")
    signed = _HEADER.pack(VERSION, direction, channel_id, seq) + data
    return signed + _tag(key, session_id, signed)


def open_data(key: bytes, session_id: str, direction: Direction, frame: bytes) -> ChannelData:
    """Check a received frame: size, version, direction, then the tag (constant time).

    Raises ``ProtocolError``: 1009 for a frame too large, 4400 for a malformed one, 4401
    for a tag that does not verify. The seq is the channel's to check (``ChannelWindow``)."""
    if len(frame) > HEADER_BYTES + MAX_DATA + TAG_BYTES:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"channel frame over {MAX_DATA} bytes")
    if len(frame) < HEADER_BYTES + TAG_BYTES:
        raise ProtocolError(CloseCode.MALFORMED, "channel frame shorter than its header")
    signed, tag = frame[:-TAG_BYTES], frame[-TAG_BYTES:]
    version, sent_direction, channel_id, seq = _HEADER.unpack_from(signed)
    if version != VERSION:
        raise ProtocolError(CloseCode.MALFORMED, f"channel frame version {version}")
    if sent_direction != direction:
        raise ProtocolError(CloseCode.MALFORMED, "channel frame in the wrong direction")
    if not hmac.compare_digest(_tag(key, session_id, signed), tag):
        raise ProtocolError(CloseCode.AUTH_FAILED, "channel frame tag does not verify")
    if seq == 0:
        raise ProtocolError(CloseCode.MALFORMED, "channel frame seq 0")
    return ChannelData(channel_id, seq, bytes(signed[HEADER_BYTES:]))


class ChannelWindow:
    """One channel, one direction, as its receiver sees it: the next seq due and the bytes
    the sender may still send. ``receive`` raises ``ChannelViolation`` (the channel closes)
    for a frame out of order, past the window, or after the sender's end."""

    __slots__ = ("ended", "granted", "next_seq")

    def __init__(self, initial: int) -> None:
        self.next_seq = 1
        #: Bytes the sender may still send.
        self.granted = initial
        self.ended = False

    def receive(self, frame: ChannelData) -> bytes:
        """The frame's data, in order and within the window (empty: the sender's end)."""
        if self.ended:
            raise ChannelViolation(f"data after the end (seq {frame.seq})")
        if frame.seq != self.next_seq:
            raise ChannelViolation(f"seq {frame.seq}, expected {self.next_seq}")
        if len(frame.data) > self.granted:
            raise ChannelViolation(f"{len(frame.data)} bytes past a window of {self.granted}")
        self.next_seq += 1
        self.granted -= len(frame.data)
        self.ended = not frame.data
        return frame.data

    def grant(self, size: int) -> None:
        """The receiver took ``size`` bytes off its buffer: the sender may send them."""
        if size < 0:
            raise ValueError("a grant is not negative")
        self.granted += size


class SendWindow:
    """One channel, one direction, as its sender sees it: the next seq to use and the
    bytes the receiver granted that are not spent."""

    __slots__ = ("available", "next_seq")

    #: The most a window may hold: a grant past it is a violation (no counter overflows).
    MAX = 2**31

    def __init__(self, initial: int) -> None:
        self.next_seq = 1
        self.available = initial

    def take(self, wanted: int) -> tuple[int, int]:
        """``(seq, size)`` for the next frame: at most ``wanted``, ``MAX_DATA`` and what
        the window holds (size 0 with data to send: wait for a grant)."""
        size = min(wanted, MAX_DATA, self.available)
        if size == 0 and wanted:
            return 0, 0
        seq, self.next_seq = self.next_seq, self.next_seq + 1
        self.available -= size
        return seq, size

    def granted(self, size: int) -> None:
        """The receiver's grant arrived."""
        if size < 0 or self.available + size > self.MAX:
            raise ChannelViolation(f"a grant of {size} bytes")
        self.available += size


class ChannelViolation(ValueError):
    """A peer broke a channel's rules: close that channel, with this reason logged."""


@attrs.frozen
class ChannelClosed:
    """The peer closed a channel (``ChannelTable.on_control``): the table forgot it."""

    channel_id: int
    reason: str
    message: str
    exit_code: int | None


class _Channel:
    __slots__ = ("accepted", "receiving", "sending", "unreported")

    def __init__(self, window: int) -> None:
        self.receiving = ChannelWindow(window)
        self.sending = SendWindow(0)
        self.accepted = False
        #: Bytes taken off the receive buffer and not yet granted back.
        self.unreported = 0


class ChannelTable:
    """The channels of one connection as one end sees them (the server opens them, the
    agent accepts them). Ids only grow: a frame for an id at or below the highest seen
    that is no longer open arrived after its close and is dropped (``on_data`` returns
    None); an id never opened is a broken peer (``ProtocolError`` 4400)."""

    __slots__ = ("_channels", "_highest", "max_open", "opener", "window")

    def __init__(self, *, opener: bool, window: int = 1 << 20, max_open: int = 16) -> None:
        self.opener = opener
        #: The receive window each channel starts with (and is kept near).
        self.window = window
        self.max_open = max_open
        self._channels: dict[int, _Channel] = {}
        self._highest = 0

    def __len__(self) -> int:
        return len(self._channels)

    def __contains__(self, channel_id: int) -> bool:
        return channel_id in self._channels

    def open(
        self,
        kind: str,
        params: ShellParams | TunnelParams,
        requested_by: str | None = None,
        intent: Mapping[str, Any] | None = None,
    ) -> ChannelControl:
        """Server: a new channel's ``open`` (RuntimeError when ``max_open`` are open)."""
        if not self.opener:
            raise RuntimeError("only the server opens channels")
        if len(self._channels) >= self.max_open:
            raise RuntimeError(f"{self.max_open} channels are open on this connection")
        self._highest += 1
        self._channels[self._highest] = _Channel(self.window)
        return ChannelControl(
            "open", self._highest, kind, self.window, params, requested_by, intent=intent
        )

    def on_control(self, control: ChannelControl) -> ChannelControl | ChannelClosed | None:
        """A ``channel`` message from the peer. Returns the ``open`` to act on (agent),
        ``ChannelClosed``, the ``close`` to send back (a refused open, a broken rule), or
        None (a grant taken, an accept recorded, a late message dropped)."""
        channel_id = control.channel_id
        if control.op == "open":
            if self.opener:
                return ChannelControl.close(channel_id, "refused", "agents do not open channels")
            if channel_id <= self._highest:
                raise ProtocolError(CloseCode.MALFORMED, f"channel {channel_id} opened twice")
            self._highest = channel_id
            if len(self._channels) >= self.max_open:
                message = f"{self.max_open} channels are open on this agent"
                return ChannelControl.close(channel_id, "limit", message)
            opened = self._channels[channel_id] = _Channel(self.window)
            opened.sending.granted(control.window or 0)
            return control
        channel = self._channels.get(channel_id)
        if channel is None:
            if channel_id > self._highest:
                raise ProtocolError(CloseCode.MALFORMED, f"channel {channel_id} was never opened")
            return None  # sent before the peer saw our close
        match control.op:
            case "accept" if self.opener and not channel.accepted:
                channel.accepted = True
                return self._granted(channel_id, channel, control.window or 0)
            case "window":
                return self._granted(channel_id, channel, control.size or 0)
            case "resize" if not self.opener:
                return control
            case "close":
                del self._channels[channel_id]
                return ChannelClosed(
                    channel_id, control.reason or "error", control.message or "", control.exit_code
                )
        return self.violated(channel_id, f"{control.op!r} is not allowed now")

    def _granted(self, channel_id: int, channel: _Channel, size: int) -> ChannelControl | None:
        try:
            channel.sending.granted(size)
        except ChannelViolation as error:
            return self.violated(channel_id, str(error))
        return None

    def accept(self, channel_id: int) -> ChannelControl:
        """Agent: the ``accept`` for an open it acted on."""
        channel = self._channels[channel_id]
        channel.accepted = True
        return ChannelControl("accept", channel_id, window=self.window)

    def on_data(self, frame: ChannelData) -> bytes | ChannelControl | None:
        """A verified data frame: its bytes (empty: the peer's end of data), the ``close``
        to send for a broken rule, or None for a frame that came after a close."""
        channel = self._channels.get(frame.channel_id)
        if channel is None:
            if frame.channel_id > self._highest:
                reason = f"data for channel {frame.channel_id}, never opened"
                raise ProtocolError(CloseCode.MALFORMED, reason)
            return None
        try:
            return channel.receiving.receive(frame)
        except ChannelViolation as error:
            return self.violated(frame.channel_id, str(error))

    def take(self, channel_id: int, wanted: int) -> tuple[int, int]:
        """``(seq, size)`` of the next frame to send on the channel (``SendWindow.take``);
        (0, 0) for a channel that is gone or not yet accepted."""
        channel = self._channels.get(channel_id)
        if channel is None or not channel.accepted:
            return 0, 0
        return channel.sending.take(wanted)

    def sendable(self, channel_id: int) -> int:
        """Bytes the peer granted that are not spent (0 for a channel that is gone)."""
        channel = self._channels.get(channel_id)
        return 0 if channel is None or not channel.accepted else channel.sending.available

    def consumed(self, channel_id: int, size: int) -> ChannelControl | None:
        """This end took ``size`` bytes off the channel's buffer: the ``window`` grant to
        send once a quarter of the window is free again (fewer, larger grants)."""
        channel = self._channels.get(channel_id)
        if channel is None:
            return None
        channel.unreported += size
        if channel.unreported < max(1, self.window // 4):
            return None
        size, channel.unreported = channel.unreported, 0
        channel.receiving.grant(size)
        return ChannelControl("window", channel_id, size=size)

    def close(
        self, channel_id: int, reason: str, message: str = "", exit_code: int | None = None
    ) -> ChannelControl | None:
        """This end closes the channel: the ``close`` to send (None: already gone)."""
        if self._channels.pop(channel_id, None) is None:
            return None
        return ChannelControl.close(channel_id, reason, message, exit_code)

    def violated(self, channel_id: int, reason: str) -> ChannelControl | None:
        """A broken rule closes the channel: the ``close`` to send (reason ``violation``)."""
        return self.close(channel_id, "violation", reason)

    def close_all(self) -> list[int]:
        """The connection ended: every channel is gone (their ids)."""
        gone = list(self._channels)
        self._channels.clear()
        return gone
