"""The envelope: encoding, strict decoding in the brief's order, signing and verifying.

Receiver checks, in order (docs/protocol.md, "Receiving"): size (1009), JSON and schema
(4400), agentId (4403), timestamp (4401), signature (4401). The nonce check comes last
and lives in ``replay``, because a cluster keeps the window outside this process.
"""

from __future__ import annotations

import enum
import json
import re
from collections.abc import Mapping
from typing import Any, Final

import attrs

from . import strictjson
from .canonical import CanonicalizationError, canonicalize, canonicalize_plain
from .channel_control import ChannelControl
from .delivery import Cancel
from .errors import CloseCode, ProtocolError
from .keys import sign, verify
from .output import CommandOutput
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
)

__all__ = [
    "AGENT_ID",
    "BODIES",
    "DEFAULT_MAX_AUTH_FRAME_BYTES",
    "DEFAULT_MAX_FRAME_BYTES",
    "DEFAULT_MAX_FRAME_VALUES",
    "NONCE",
    "TIMESTAMP_WINDOW_MS",
    "Body",
    "Envelope",
    "Message",
    "MessageType",
    "Sender",
    "check_timestamp",
    "decode",
    "seal",
    "value_count",
    "values_over",
    "verify_signature",
]

#: Largest frame accepted, in UTF-8 bytes (configurable per endpoint).
DEFAULT_MAX_FRAME_BYTES: Final = 1 << 20
#: The first frame (``auth``) a server reads before it knows who is speaking.
DEFAULT_MAX_AUTH_FRAME_BYTES: Final = 16 << 10
#: JSON values a frame may hold (counted as its commas, ``[`` and ``{``, before parsing):
#: reading and canonicalizing cost about a microsecond a value, so this bounds the work one
#: frame can cost (~40 ms) whatever its bytes hold. A 256 KiB log batch holds ~15,000.
DEFAULT_MAX_FRAME_VALUES: Final = 65_536
#: Largest accepted difference between a message's ``ts`` and the receiver's clock.
TIMESTAMP_WINDOW_MS: Final = 300_000

AGENT_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
NONCE = re.compile(r"[A-Za-z0-9-]{16,64}")
_SIGNATURE = re.compile(r"[0-9a-f]{64}")
_MEMBERS = frozenset({"type", "agentId", "ts", "nonce", "payload", "signature"})


class MessageType(enum.StrEnum):
    """The ``type`` member: the six built-in types, then the negotiated extensions'."""

    AUTH = "auth"
    METRICS = "metrics"
    LOG = "log"
    COMMAND = "command"
    COMMAND_RESULT = "command_result"
    HEARTBEAT = "heartbeat"
    ACK = "ack"
    CANCEL = "cancel"
    COMMAND_OUTPUT = "command_output"
    CHANNEL = "channel"


class Sender(enum.Enum):
    """Who wrote a frame: the schema of ``auth`` and ``heartbeat`` depends on it."""

    AGENT = "agent"
    SERVER = "server"


Body = (
    AuthHello
    | AuthReply
    | Metrics
    | LogBatch
    | Command
    | CommandResult
    | Heartbeat
    | HeartbeatReply
    | Delivery
    | Cancel
    | CommandOutput
    | ChannelControl
)

#: Which types each side sends, and the payload schema of each.
BODIES: Final[Mapping[Sender, Mapping[MessageType, type[Body]]]] = {
    Sender.AGENT: {
        MessageType.AUTH: AuthHello,
        MessageType.METRICS: Metrics,
        MessageType.LOG: LogBatch,
        MessageType.COMMAND_RESULT: CommandResult,
        MessageType.HEARTBEAT: Heartbeat,
        MessageType.COMMAND_OUTPUT: CommandOutput,  # the ``output`` extension
        MessageType.CHANNEL: ChannelControl,  # the ``channels`` extension
    },
    Sender.SERVER: {
        MessageType.AUTH: AuthReply,
        MessageType.COMMAND: Command,
        MessageType.HEARTBEAT: HeartbeatReply,
        MessageType.ACK: Delivery,  # every message of stream up to seq is stored
        MessageType.CANCEL: Cancel,
        MessageType.CHANNEL: ChannelControl,
    },
}
_TYPES = {t.value: t for t in MessageType}
_ENCODE = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode


@attrs.frozen
class Envelope:
    """One signed message as it travels."""

    type: MessageType
    agent_id: str
    ts: int
    nonce: str
    payload: Mapping[str, Any]
    signature: str
    #: The payload's RFC 8785 text when ``seal`` made it (it is JSON: the frame carries it
    #: as it is, instead of encoding the payload again).
    payload_json: str | None = attrs.field(default=None, eq=False, repr=False)

    def signing_input(self, payload_canonical: bytes | None = None) -> bytes:
        """RFC 8785 bytes of the envelope without ``signature``.

        Built around the payload's canonical bytes: agentId, nonce and type need no
        escaping in their alphabets, and ts is a safe integer, so the frame is exact.
        """
        if payload_canonical is None:
            payload_canonical = canonicalize(self.payload)
        return b'{"agentId":"%s","nonce":"%s","payload":%s,"ts":%d,"type":"%s"}' % (
            self.agent_id.encode("ascii"),
            self.nonce.encode("ascii"),
            payload_canonical,
            self.ts,
            self.type.value.encode("ascii"),
        )

    def unsigned(self) -> dict[str, Any]:
        """The envelope without ``signature``: what is canonicalized and signed."""
        return {
            "type": self.type.value,
            "agentId": self.agent_id,
            "ts": self.ts,
            "nonce": self.nonce,
            "payload": self.payload,
        }

    def to_frame(self) -> str:
        """The text frame to send."""
        if self.payload_json is not None:
            # The members but the payload need no escaping (their alphabets, a safe int).
            return (
                f'{{"type":"{self.type.value}","agentId":"{self.agent_id}","ts":{self.ts},'
                f'"nonce":"{self.nonce}","payload":{self.payload_json},'
                f'"signature":"{self.signature}"}}'
            )
        fields = self.unsigned()
        fields["signature"] = self.signature
        return _ENCODE(fields)


@attrs.frozen
class Message:
    """A decoded frame: the envelope, its typed payload, and the bytes its signature covers.

    ``body`` is None when the sender may not send this type; the session decides what
    that means (4401 as a first frame, 4400 later).
    """

    envelope: Envelope
    body: Body | None
    signing_input: bytes = attrs.field(repr=False)


def seal(
    type: MessageType,
    agent_id: str,
    payload: Mapping[str, Any],
    *,
    key: bytes,
    ts: int,
    nonce: str,
) -> Envelope:
    """A signed envelope.

    Raises ValueError for an agentId, nonce or ts that receivers would refuse, and
    ``CanonicalizationError`` (a ValueError) for a payload that is not signable JSON.
    """
    if not AGENT_ID.fullmatch(agent_id):
        raise ValueError(f"invalid agentId {agent_id!r}")
    if not NONCE.fullmatch(nonce):
        raise ValueError(f"invalid nonce {nonce!r}")
    if not 0 <= ts <= strictjson.MAX_SAFE_INTEGER:
        raise ValueError(f"ts out of range: {ts}")
    unsigned = Envelope(type, agent_id, ts, nonce, payload, "")
    canonical, plain = canonicalize_plain(payload)
    return attrs.evolve(
        unsigned,
        signature=sign(key, unsigned.signing_input(canonical)),
        payload_json=canonical.decode("utf-8") if plain else None,
    )


def _malformed(reason: str) -> ProtocolError:
    return ProtocolError(CloseCode.MALFORMED, reason)


def _text_of(frame: str | bytes, max_bytes: int) -> str:
    if len(frame) > max_bytes:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"frame over {max_bytes} bytes")
    if isinstance(frame, str):
        if frame.isascii():
            return frame
        try:
            size = len(frame.encode("utf-8"))
        except UnicodeEncodeError:
            raise _malformed("text is not valid Unicode") from None
        if size > max_bytes:
            raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"frame over {max_bytes} bytes")
        return frame
    try:
        return frame.decode("utf-8")
    except UnicodeDecodeError:
        raise _malformed("frame is not UTF-8") from None


def _envelope_of(value: Any) -> Envelope:
    if type(value) is not dict:
        raise _malformed("envelope must be a JSON object")
    if value.keys() != _MEMBERS:
        extra = sorted(value.keys() - _MEMBERS)
        missing = sorted(_MEMBERS - value.keys())
        raise _malformed(f"envelope members: missing {missing}, unexpected {extra}")
    kind = _TYPES.get(value["type"]) if type(value["type"]) is str else None
    if kind is None:
        raise _malformed("unknown message type")
    agent_id, ts, nonce = value["agentId"], value["ts"], value["nonce"]
    if type(agent_id) is not str or not AGENT_ID.fullmatch(agent_id):
        raise _malformed("agentId must be 1-128 chars of [A-Za-z0-9._:-], alphanumeric first")
    if type(ts) is not int or ts < 0:
        raise _malformed("ts must be a non-negative integer (Unix milliseconds)")
    if type(nonce) is not str or not NONCE.fullmatch(nonce):
        raise _malformed("nonce must be 16-64 chars of [A-Za-z0-9-]")
    payload, signature = value["payload"], value["signature"]
    if type(payload) is not dict:
        raise _malformed("payload must be an object")
    if type(signature) is not str or not _SIGNATURE.fullmatch(signature):
        raise _malformed("signature must be 64 lowercase hex digits")
    return Envelope(kind, agent_id, ts, nonce, payload, signature)


def decode(
    frame: str | bytes,
    *,
    sender: Sender,
    agent_id: str | None = None,
    max_bytes: int = DEFAULT_MAX_FRAME_BYTES,
    max_values: int = DEFAULT_MAX_FRAME_VALUES,
    now_ms: int | None = None,
    window_ms: int = TIMESTAMP_WINDOW_MS,
) -> Message:
    """Size (bytes, then JSON values), JSON, schema, (when given) agentId and ``ts`` checks
    of one text frame, in that order; canonicalization, the costliest, comes last.

    ``frame`` is the frame's text, or its UTF-8 bytes. Raises only ``ProtocolError``.
    """
    text = _text_of(frame, max_bytes)
    values = values_over(text, max_values)
    if values:
        raise ProtocolError(CloseCode.MESSAGE_TOO_BIG, f"{values} JSON values, over {max_values}")
    try:
        value = strictjson.loads(text)
    except strictjson.JSONRejectedError as exc:
        raise _malformed(str(exc)) from None
    envelope = _envelope_of(value)
    schema = BODIES[sender].get(envelope.type)
    body = None if schema is None else schema.from_payload(envelope.payload)
    if agent_id is not None and envelope.agent_id != agent_id:
        raise ProtocolError(CloseCode.AGENT_MISMATCH, "agentId is not the authenticated one")
    if now_ms is not None:
        check_timestamp(envelope.ts, now_ms, window_ms)
    try:
        payload_canonical = canonicalize(envelope.payload, parsed=True)
    except CanonicalizationError as exc:
        raise _malformed(str(exc)) from None
    return Message(envelope, body, envelope.signing_input(payload_canonical))


def value_count(text: str) -> int:
    """At least the number of JSON values in ``text``, found at C speed without parsing:
    every value but the first takes a comma or opens a container (commas in strings count
    too, so it errs on the safe side)."""
    return text.count(",") + text.count("[") + text.count("{") + 1


def values_over(text: str, most: int) -> int:
    """``value_count(text)`` when it is over ``most``, else 0 (text no longer than ``most``
    is not counted: each value takes at least one character)."""
    if len(text) <= most:
        return 0
    values = value_count(text)
    return values if values > most else 0


def check_timestamp(ts: int, now_ms: int, window_ms: int = TIMESTAMP_WINDOW_MS) -> None:
    """Raise 4401 unless ``|now - ts| <= window``."""
    if abs(now_ms - ts) > window_ms:
        raise ProtocolError(CloseCode.AUTH_FAILED, f"ts is {now_ms - ts} ms from now")


def verify_signature(message: Message, keys: tuple[bytes, ...]) -> bytes:
    """The key that signed ``message``; raises 4401 when none did."""
    key = verify(keys, message.signing_input, message.envelope.signature)
    if key is None:
        raise ProtocolError(CloseCode.AUTH_FAILED, "signature does not verify")
    return key
