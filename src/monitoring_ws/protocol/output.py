"""The ``output`` extension: a command's output as it happens (docs/protocol.md, "Extension:
output").

Negotiated in the auth exchange like ``ack``. The server asks for it per command
(``streamOutput: true`` in the ``command`` payload, sent only to an agent that negotiated
it); the agent then sends what the command writes as ``command_output`` messages, numbered
per command from 1 and kept in its outbox until acknowledged, and its ``command_result``
carries the exit code and the totals instead of the output. ``OutputDecoder`` cuts a byte
stream into chunks that are text when they are UTF-8 and base64 when they are not.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Mapping
from typing import Any, Self

import attrs

from .payloads import NAME, schema_error

__all__ = [
    "FEATURE_OUTPUT",
    "MAX_CHUNK_BYTES",
    "STREAMS",
    "CommandOutput",
    "OutputDecoder",
    "chunk_bytes_for",
]

FEATURE_OUTPUT = "output"
#: ``stream`` names: what the command wrote to its standard output or error.
STREAMS = ("stdout", "stderr")
#: The most bytes one chunk carries (before text or base64 encoding).
MAX_CHUNK_BYTES = 65_536
#: JSON's safe integer range bounds ``seq`` and ``offset``.
_MAX_SAFE = 2**53 - 1
#: Characters of a chunk's ``text`` (a JSON string of at most MAX_CHUNK_BYTES UTF-8 bytes
#: is at most that many characters) and of its ``base64``.
_MAX_TEXT = MAX_CHUNK_BYTES
_MAX_BASE64 = (MAX_CHUNK_BYTES + 2) // 3 * 4
#: Every byte but those JSON writes as ``\u00XX`` (deleted, what is left is counted).
_NOT_CONTROL = bytes(range(0x20, 0x100)) + b"\t\n"
#: A text chunk holds fewer of ``,[{`` than this: a receiver counts them as JSON values
#: before it parses a frame (65,536 at most), so a chunk of commas goes as base64.
MAX_TEXT_VALUES = 16_384


@attrs.frozen
class CommandOutput:
    """Agent -> server ``command_output``: chunk ``seq`` of command ``command_id``'s
    output, ``offset`` bytes into its ``stream``; ``data`` is the text, or the base64 when
    ``binary``."""

    command_id: str
    stream: str
    seq: int
    offset: int
    data: str
    binary: bool = False

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        command_id = payload.get("commandId")
        if not isinstance(command_id, str) or not NAME.fullmatch(command_id):
            raise schema_error("payload.commandId must be 1-128 chars of [A-Za-z0-9._:-]")
        stream = payload.get("stream")
        if stream not in STREAMS:
            raise schema_error("payload.stream must be stdout or stderr")
        seq, offset = payload.get("seq"), payload.get("offset")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= _MAX_SAFE:
            raise schema_error("payload.seq must be a positive integer")
        if isinstance(offset, bool) or not isinstance(offset, int) or not 0 <= offset <= _MAX_SAFE:
            raise schema_error("payload.offset must be a non-negative integer")
        text, encoded = payload.get("text"), payload.get("base64")
        if (text is None) == (encoded is None):
            raise schema_error("payload must hold exactly one of text and base64")
        if text is not None:
            if not isinstance(text, str) or len(text) > _MAX_TEXT:
                raise schema_error(f"payload.text must be a string of at most {_MAX_TEXT} chars")
            return cls(command_id, stream, seq, offset, text)
        if not isinstance(encoded, str) or len(encoded) > _MAX_BASE64:
            raise schema_error(f"payload.base64 must be a string of at most {_MAX_BASE64} chars")
        try:
            base64.b64decode(encoded, validate=True)
        except (binascii.Error, ValueError):
            raise schema_error("payload.base64 is not base64 (RFC 4648, padded)") from None
        return cls(command_id, stream, seq, offset, encoded, binary=True)

    def to_payload(self) -> dict[str, Any]:
        return {
            "commandId": self.command_id,
            "stream": self.stream,
            "seq": self.seq,
            "offset": self.offset,
            "base64" if self.binary else "text": self.data,
        }

    @property
    def size(self) -> int:
        """The chunk's bytes (what ``offset`` counts)."""
        if self.binary:
            return len(base64.b64decode(self.data))
        return len(self.data.encode("utf-8", "surrogatepass"))

    def raw(self) -> bytes:
        """The bytes the command wrote."""
        if self.binary:
            return base64.b64decode(self.data)
        return self.data.encode("utf-8", "surrogatepass")


def chunk_bytes_for(max_frame_bytes: int) -> int:
    """The most bytes a chunk may carry so its frame fits ``max_frame_bytes`` (base64 is
    4/3 of the bytes; the envelope and members take under 1 KiB)."""
    return max(256, min(MAX_CHUNK_BYTES, (max_frame_bytes - 1024) * 3 // 4))


class OutputDecoder:
    """One stream's bytes in, chunks out: text when the bytes are UTF-8 (a character cut
    at a chunk's end waits for the next chunk), base64 when they are not. No I/O."""

    __slots__ = ("_held", "offset", "stream")

    def __init__(self, stream: str) -> None:
        self.stream = stream
        #: Bytes of this stream already put in chunks.
        self.offset = 0
        self._held = b""

    def feed(self, data: bytes, *, final: bool = False) -> list[tuple[int, str, bool]]:
        """``(offset, data, binary)`` of each chunk ``data`` completes (``final``: the
        stream ended, nothing is held back)."""
        data = self._held + data
        self._held = b""
        if not data:
            return []
        cut = len(data) if final else _complete_utf8(data)
        whole, self._held = data[:cut], data[cut:]
        if not whole:
            return []
        offset, self.offset = self.offset, self.offset + len(whole)
        try:
            text = whole.decode("utf-8")
        except UnicodeDecodeError:
            return [(offset, base64.b64encode(whole).decode("ascii"), True)]
        # A control character costs 6 bytes in JSON: past a few, base64 is smaller.
        controls = len(whole.translate(None, _NOT_CONTROL))
        values = whole.count(b",") + whole.count(b"[") + whole.count(b"{")
        if controls * 5 > len(whole) // 3 or values >= MAX_TEXT_VALUES:
            return [(offset, base64.b64encode(whole).decode("ascii"), True)]
        return [(offset, text, False)]


def _complete_utf8(data: bytes) -> int:
    """Where the last complete UTF-8 character of ``data`` ends (a cut multi-byte
    character at the end is held back; anything else is left for the decoder to judge)."""
    for back in range(1, min(4, len(data)) + 1):
        byte = data[-back]
        if byte < 0x80:
            return len(data)  # ASCII: complete
        if byte >= 0xC0:  # a lead byte: how long is its character?
            need = 2 if byte < 0xE0 else 3 if byte < 0xF0 else 4
            return len(data) - back if need > back else len(data)
    return len(data)
