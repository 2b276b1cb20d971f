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
No I/O here; the JSON messages that open, grant and close channels are another part.
"""

from __future__ import annotations

import enum
import hashlib
import hmac
import struct

import attrs

from .errors import CloseCode, ProtocolError

__all__ = [
    "FEATURE_CHANNELS",
    "HEADER_BYTES",
    "MAX_DATA",
    "TAG_BYTES",
    "ChannelData",
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
