"""Typed payloads of the six message types, with their schemas (docs/protocol.md).

Every ``from_payload`` raises ``ProtocolError(MALFORMED)`` for a payload that breaks its
schema; members not named here are allowed and ignored. ``to_payload`` gives the JSON
object to sign.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Self

import attrs

from .errors import CloseCode, ProtocolError
from .labels import FEATURE_LABELS, LabelError, check_labels

__all__ = [
    "PROTOCOL_VERSION",
    "AuthHello",
    "AuthReply",
    "Capabilities",
    "Command",
    "CommandError",
    "CommandResult",
    "Delivery",
    "Heartbeat",
    "HeartbeatReply",
    "LogBatch",
    "LogEntry",
    "Metrics",
    "delivery_of",
    "schema_error",
]

PROTOCOL_VERSION = 1
#: Names of commands, features and ids share the agentId alphabet.
NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:-]{0,127}")
_SHORT_TEXT = 256


def schema_error(reason: str) -> ProtocolError:
    """The error for a payload that breaks its schema."""
    return ProtocolError(CloseCode.MALFORMED, reason)


def _member(payload: Mapping[str, Any], name: str, kind: type | tuple[type, ...]) -> Any:
    value = payload.get(name)
    # bool is an int in Python; JSON true is never a number here.
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is int):
        raise schema_error(f"payload.{name} must be {_kind_name(kind)}")
    return value


def _optional(payload: Mapping[str, Any], name: str, kind: type) -> Any:
    return None if payload.get(name) is None else _member(payload, name, kind)


def _kind_name(kind: type | tuple[type, ...]) -> str:
    names = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object"}
    names |= {list: "an array"}
    if isinstance(kind, tuple):
        return " or ".join(names[k] for k in kind)
    return names[kind]


def _name(payload: Mapping[str, Any], member: str) -> str:
    value = _member(payload, member, str)
    if not NAME.fullmatch(value):
        raise schema_error(f"payload.{member} must be 1-128 chars of [A-Za-z0-9._:-]")
    return str(value)


def _text(payload: Mapping[str, Any], member: str, limit: int = _SHORT_TEXT) -> str:
    value = _member(payload, member, str)
    if len(value) > limit:
        raise schema_error(f"payload.{member} is longer than {limit} chars")
    return str(value)


def _optional_text(payload: Mapping[str, Any], member: str) -> str | None:
    return None if payload.get(member) is None else _text(payload, member)


def _non_negative(payload: Mapping[str, Any], member: str, minimum: int = 0) -> int:
    value = _member(payload, member, int)
    if value < minimum:
        raise schema_error(f"payload.{member} must be >= {minimum}")
    return int(value)


def _names(payload: Mapping[str, Any], member: str) -> tuple[str, ...]:
    items = _member(payload, member, list)
    if not all(isinstance(item, str) and NAME.fullmatch(item) for item in items):
        raise schema_error(f"payload.{member} must be an array of names")
    return tuple(items)


@attrs.frozen
class Capabilities:
    """What an agent can do: command names it handles, protocol features it speaks."""

    commands: tuple[str, ...] = ()
    features: tuple[str, ...] = ()

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        return cls(_names(payload, "commands"), _names(payload, "features"))

    def to_payload(self) -> dict[str, Any]:
        return {"commands": list(self.commands), "features": list(self.features)}


@attrs.frozen
class AuthHello:
    """Agent -> server ``auth``: the first frame of every connection."""

    agent_version: str
    hostname: str
    capabilities: Capabilities = Capabilities()
    instance_id: str | None = None
    protocol: int = PROTOCOL_VERSION
    #: With the ``labels`` feature: the agent's labels (protocol/labels.py), sorted pairs.
    labels: tuple[tuple[str, str], ...] | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        protocol = _member(payload, "protocol", int)
        if protocol != PROTOCOL_VERSION:
            raise schema_error(f"unsupported protocol version {protocol}")
        instance_id = _optional(payload, "instanceId", str)
        if instance_id is not None and not NAME.fullmatch(instance_id):
            raise schema_error("payload.instanceId must be 1-128 chars of [A-Za-z0-9._:-]")
        capabilities = Capabilities.from_payload(_member(payload, "capabilities", dict))
        labels = None
        # Only an agent that offers the feature means our ``labels`` by the member.
        if FEATURE_LABELS in capabilities.features and payload.get("labels") is not None:
            try:
                labels = tuple(sorted(check_labels(payload["labels"]).items()))
            except LabelError as exc:
                raise schema_error(f"payload.labels: {exc}") from None
        return cls(
            agent_version=_text(payload, "agentVersion"),
            hostname=_text(payload, "hostname"),
            capabilities=capabilities,
            instance_id=instance_id,
            labels=labels,
        )

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "protocol": self.protocol,
            "agentVersion": self.agent_version,
            "hostname": self.hostname,
            "capabilities": self.capabilities.to_payload(),
        }
        if self.instance_id is not None:
            payload["instanceId"] = self.instance_id
        if self.labels is not None:
            payload["labels"] = dict(self.labels)
        return payload


#: The smallest frame limit a server may announce: an auth reply must fit.
MIN_FRAME_LIMIT = 4096


@attrs.frozen
class AuthReply:
    """Server -> agent ``auth``: the handshake succeeded.

    ``auth_nonce`` echoes the nonce of the agent's ``auth`` frame, so the agent knows the
    reply is fresh without trusting its own clock.
    """

    session_id: str
    server_time: int
    heartbeat_interval_ms: int
    features: tuple[str, ...]
    #: Optional (servers written from protocol v1 alone do not echo it); without it the
    #: agent checks the reply's ``ts`` like any frame's.
    auth_nonce: str | None = None
    #: The largest frame the server takes (optional; agents assume 1 MiB without it).
    max_frame_bytes: int | None = None
    #: With the ``output`` extension: the bytes a second of ``command_output`` frames the
    #: server takes from this agent (it paces itself to stay under).
    output_bytes_per_s: int | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        if payload.get("ok") is not True:
            raise schema_error("payload.ok must be true")
        max_frame = _optional(payload, "maxFrameBytes", int)
        if max_frame is not None and max_frame < MIN_FRAME_LIMIT:
            raise schema_error(f"payload.maxFrameBytes must be >= {MIN_FRAME_LIMIT}")
        output_rate = _optional(payload, "outputBytesPerS", int)
        if output_rate is not None and output_rate < 1:
            raise schema_error("payload.outputBytesPerS must be >= 1")
        return cls(
            session_id=_text(payload, "sessionId"),
            server_time=_non_negative(payload, "serverTime"),
            heartbeat_interval_ms=_non_negative(payload, "heartbeatIntervalMs", 1),
            features=_names(payload, "features"),
            auth_nonce=_optional_text(payload, "authNonce"),
            max_frame_bytes=max_frame,
            output_bytes_per_s=output_rate,
        )

    def to_payload(self) -> dict[str, Any]:
        payload = {
            "ok": True,
            "sessionId": self.session_id,
            "serverTime": self.server_time,
            "heartbeatIntervalMs": self.heartbeat_interval_ms,
            "features": list(self.features),
        }
        if self.auth_nonce is not None:
            payload["authNonce"] = self.auth_nonce
        if self.max_frame_bytes is not None:
            payload["maxFrameBytes"] = self.max_frame_bytes
        if self.output_bytes_per_s is not None:
            payload["outputBytesPerS"] = self.output_bytes_per_s
        return payload


@attrs.frozen
class _FreeForm:
    """A payload whose schema is "any object"."""

    values: Mapping[str, Any] = attrs.field(factory=dict)

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        return cls(payload)

    def to_payload(self) -> dict[str, Any]:
        return dict(self.values)


@attrs.frozen
class Metrics(_FreeForm):
    """Agent -> server ``metrics``: one sample, a free-form object (docs/protocol.md)."""


@attrs.frozen
class LogEntry:
    """One log line."""

    ts: int
    level: str
    message: str
    source: str | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        return cls(
            ts=_non_negative(payload, "ts"),
            level=_text(payload, "level", 32),
            message=_member(payload, "message", str),
            source=_optional(payload, "source", str),
        )

    def to_payload(self) -> dict[str, Any]:
        entry: dict[str, Any] = {"ts": self.ts, "level": self.level, "message": self.message}
        if self.source is not None:
            entry["source"] = self.source
        return entry


@attrs.frozen
class LogBatch:
    """Agent -> server ``log``: a batch of lines."""

    entries: tuple[LogEntry, ...]

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        entries = _member(payload, "entries", list)
        if not all(isinstance(entry, dict) for entry in entries):
            raise schema_error("payload.entries must be an array of objects")
        return cls(tuple(LogEntry.from_payload(entry) for entry in entries))

    def to_payload(self) -> dict[str, Any]:
        return {"entries": [entry.to_payload() for entry in self.entries]}


@attrs.frozen
class Command:
    """Server -> agent ``command``."""

    command_id: str
    command: str
    args: Mapping[str, Any]
    timeout_ms: int
    #: With the ``output`` extension: send the output as it happens (``command_output``).
    stream_output: bool = False
    #: With the ``intents`` extension: the operator's signed intent, as the operator's
    #: client made it (intent.py checks it; the server relays it unchanged).
    intent: Mapping[str, Any] | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        stream = payload.get("streamOutput", False)
        if not isinstance(stream, bool):
            raise schema_error("payload.streamOutput must be a boolean")
        intent = payload.get("intent")
        if intent is not None and not isinstance(intent, dict):
            raise schema_error("payload.intent must be an object")
        return cls(
            command_id=_name(payload, "commandId"),
            command=_name(payload, "command"),
            args=_member(payload, "args", dict),
            timeout_ms=_non_negative(payload, "timeoutMs", 1),
            stream_output=stream,
            intent=intent,
        )

    def to_payload(self) -> dict[str, Any]:
        payload = {
            "commandId": self.command_id,
            "command": self.command,
            "args": dict(self.args),
            "timeoutMs": self.timeout_ms,
        }
        if self.stream_output:  # only then: a command stays as protocol v1 has it
            payload["streamOutput"] = True
        if self.intent is not None:
            payload["intent"] = dict(self.intent)
        return payload


@attrs.frozen
class CommandError:
    """Why a command failed: a short machine code and a human message."""

    code: str
    message: str

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        return cls(_name(payload, "code"), _member(payload, "message", str))

    def to_payload(self) -> dict[str, Any]:
        return {"code": self.code, "message": self.message}


@attrs.frozen
class CommandResult:
    """Agent -> server ``command_result``."""

    command_id: str
    ok: bool
    duration_ms: int
    result: Any = None
    error: CommandError | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        error = _optional(payload, "error", dict)
        return cls(
            command_id=_name(payload, "commandId"),
            ok=_member(payload, "ok", bool),
            duration_ms=_non_negative(payload, "durationMs"),
            result=payload.get("result"),
            error=None if error is None else CommandError.from_payload(error),
        )

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {
            "commandId": self.command_id,
            "ok": self.ok,
            "durationMs": self.duration_ms,
        }
        if self.result is not None:
            payload["result"] = self.result
        if self.error is not None:
            payload["error"] = self.error.to_payload()
        return payload


#: JSON's safe integer range bounds a sequence number.
_MAX_SEQ = 2**53 - 1


@attrs.frozen
class Delivery:
    """Message ``seq`` of an agent's outbox ``stream`` (a new outbox starts a new stream)."""

    stream: str
    seq: int

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any], known_stream: str | None = None) -> Self:
        """``known_stream``: a stream name already checked (skips the pattern match)."""
        stream, seq = payload.get("stream"), payload.get("seq")
        if not isinstance(stream, str) or (stream != known_stream and not NAME.fullmatch(stream)):
            raise schema_error("delivery.stream must be 1-128 chars of [A-Za-z0-9._:-]")
        if isinstance(seq, bool) or not isinstance(seq, int) or not 1 <= seq <= _MAX_SEQ:
            raise schema_error("delivery.seq must be a positive integer")
        return cls(stream, seq)

    def to_payload(self) -> dict[str, Any]:
        return {"stream": self.stream, "seq": self.seq}


def delivery_of(payload: Mapping[str, Any], known_stream: str | None = None) -> Delivery | None:
    """The payload's ``delivery`` member, if it has one."""
    value = payload.get("delivery")
    if value is None:
        return None
    if not isinstance(value, dict):
        raise schema_error("payload.delivery must be an object")
    return Delivery.from_payload(value, known_stream)


@attrs.frozen
class Heartbeat(_FreeForm):
    """Agent -> server ``heartbeat``: any object (``{}`` will do)."""


@attrs.frozen
class HeartbeatReply:
    """Server -> agent ``heartbeat``: the answer to each agent heartbeat."""

    server_time: int
    #: With the ``ack`` extension: what the server has stored of this agent's outbox.
    ack: Delivery | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        ack = _optional(payload, "ack", dict)
        ack = None if ack is None else Delivery.from_payload(ack)
        return cls(_non_negative(payload, "serverTime"), ack)

    def to_payload(self) -> dict[str, Any]:
        if self.ack is None:
            return {"serverTime": self.server_time}
        return {"serverTime": self.server_time, "ack": self.ack.to_payload()}
