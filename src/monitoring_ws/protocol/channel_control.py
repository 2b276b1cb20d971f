"""The ``channel`` message of the ``channels`` extension (docs/protocol.md 11.6): opening,
granting, resizing and closing the channels whose bytes travel as binary data frames
(``channels.py``). A signed JSON envelope like every other message, so a channel is
opened only by a frame the server signed, exactly like a command.

    op       sent by  members
    open     server   channelId, kind, window, params, [requestedBy]
    accept   agent    channelId, window
    window   both     channelId, bytes
    resize   server   channelId, cols, rows
    close    both     channelId, reason, [message], [exitCode]
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Self, TypeGuard

import attrs

from .payloads import schema_error

__all__ = [
    "CHANNEL_KINDS",
    "CLOSE_REASONS",
    "MAX_WINDOW",
    "ChannelControl",
    "ShellParams",
    "TunnelParams",
]

OPS = ("open", "accept", "window", "resize", "close")
CHANNEL_KINDS = ("shell", "tunnel")
#: Why a channel closed: ``closed`` both ends finished; ``exit`` the shell exited
#: (``exitCode``); ``refused`` the agent would not open it (``message`` says why);
#: ``reset`` the TCP connection was reset; ``timeout`` a connect or an idle timeout;
#: ``violation`` the peer broke the channel's rules; ``limit`` too many channels;
#: ``error`` anything else.
CLOSE_REASONS = ("closed", "exit", "refused", "reset", "timeout", "violation", "limit", "error")
#: The most one grant (and one window) may hold.
MAX_WINDOW = 2**31
_MAX_ID = 2**32 - 1
_MAX_MESSAGE = 1024
_TERM = re.compile(r"[A-Za-z0-9._+-]{1,64}")
#: A host name or an IP address literal, as a tunnel's destination.
_HOST = re.compile(r"[A-Za-z0-9._:-]{1,253}")


@attrs.frozen
class ShellParams:
    """An interactive shell on a pseudo-terminal of ``cols`` x ``rows``."""

    cols: int = 80
    rows: int = 24
    term: str = "xterm-256color"

    @classmethod
    def from_payload(cls, params: Mapping[str, Any]) -> Self:
        cols, rows = _size(params, "cols"), _size(params, "rows")
        term = params.get("term", "xterm-256color")
        if not isinstance(term, str) or not _TERM.fullmatch(term):
            raise schema_error("payload.params.term must be 1-64 chars of [A-Za-z0-9._+-]")
        return cls(cols, rows, term)

    def to_payload(self) -> dict[str, Any]:
        return {"cols": self.cols, "rows": self.rows, "term": self.term}


@attrs.frozen
class TunnelParams:
    """A TCP connection from the agent to ``host``:``port``."""

    host: str
    port: int

    @classmethod
    def from_payload(cls, params: Mapping[str, Any]) -> Self:
        host, port = params.get("host"), params.get("port")
        if not isinstance(host, str) or not _HOST.fullmatch(host):
            raise schema_error("payload.params.host must be a host name or an IP address")
        if not _is_int(port) or not 1 <= port <= 65535:
            raise schema_error("payload.params.port must be 1-65535")
        return cls(host, port)

    def to_payload(self) -> dict[str, Any]:
        return {"host": self.host, "port": self.port}


@attrs.frozen
class ChannelControl:
    """One ``channel`` message. Members an op does not use are None."""

    op: str
    channel_id: int
    kind: str | None = None
    window: int | None = None
    params: ShellParams | TunnelParams | None = None
    requested_by: str | None = None
    size: int | None = None  # ``bytes`` of a ``window`` op
    cols: int | None = None
    rows: int | None = None
    reason: str | None = None
    message: str | None = None
    exit_code: int | None = None
    #: ``open`` with ``intents``: the operator's signed intent (command ``shell`` or
    #: ``tunnel``, args the params), relayed unchanged.
    intent: Mapping[str, Any] | None = None

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        op, channel_id = payload.get("op"), payload.get("channelId")
        if op not in OPS:
            raise schema_error(f"payload.op must be one of {', '.join(OPS)}")
        if not _is_int(channel_id) or not 1 <= channel_id <= _MAX_ID:
            raise schema_error(f"payload.channelId must be 1-{_MAX_ID}")
        match op:
            case "open":
                kind, params = payload.get("kind"), payload.get("params")
                if kind not in CHANNEL_KINDS:
                    raise schema_error(f"payload.kind must be one of {', '.join(CHANNEL_KINDS)}")
                if not isinstance(params, dict):
                    raise schema_error("payload.params must be an object")
                by = payload.get("requestedBy")
                if by is not None and (not isinstance(by, str) or len(by) > 256):
                    raise schema_error("payload.requestedBy must be a string of at most 256")
                parsed = (ShellParams if kind == "shell" else TunnelParams).from_payload(params)
                intent = payload.get("intent")
                if intent is not None and not isinstance(intent, dict):
                    raise schema_error("payload.intent must be an object")
                window = _window(payload, "window")
                return cls(op, channel_id, kind, window, parsed, by, intent=intent)
            case "accept":
                return cls(op, channel_id, window=_window(payload, "window"))
            case "window":
                return cls(op, channel_id, size=_window(payload, "bytes"))
            case "resize":
                return cls(op, channel_id, cols=_size(payload, "cols"), rows=_size(payload, "rows"))
        reason, message = payload.get("reason"), payload.get("message")
        if reason not in CLOSE_REASONS:
            raise schema_error(f"payload.reason must be one of {', '.join(CLOSE_REASONS)}")
        if message is not None and (not isinstance(message, str) or len(message) > _MAX_MESSAGE):
            raise schema_error(f"payload.message must be a string of at most {_MAX_MESSAGE}")
        exit_code = payload.get("exitCode")
        if exit_code is not None and (not _is_int(exit_code) or not -256 <= exit_code <= 255):
            raise schema_error("payload.exitCode must be an integer from -256 to 255")
        return cls(op, channel_id, reason=reason, message=message, exit_code=exit_code)

    def to_payload(self) -> dict[str, Any]:
        payload: dict[str, Any] = {"op": self.op, "channelId": self.channel_id}
        optional = {
            "kind": self.kind,
            "window": self.window,
            "params": None if self.params is None else self.params.to_payload(),
            "requestedBy": self.requested_by,
            "bytes": self.size,
            "cols": self.cols,
            "rows": self.rows,
            "reason": self.reason,
            "message": self.message,
            "exitCode": self.exit_code,
            "intent": None if self.intent is None else dict(self.intent),
        }
        payload.update((name, value) for name, value in optional.items() if value is not None)
        return payload

    @classmethod
    def close(
        cls, channel_id: int, reason: str, message: str = "", exit_code: int | None = None
    ) -> Self:
        """A ``close``; ``message`` is cut to what the schema allows."""
        return cls(
            "close",
            channel_id,
            reason=reason,
            message=message[:_MAX_MESSAGE] or None,
            exit_code=exit_code,
        )


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _window(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name)
    if not _is_int(value) or not 1 <= value <= MAX_WINDOW:
        raise schema_error(f"payload.{name} must be 1-{MAX_WINDOW}")
    return int(value)


def _size(payload: Mapping[str, Any], name: str) -> int:
    value = payload.get(name, 80 if name == "cols" else 24)
    if not _is_int(value) or not 1 <= value <= 1000:
        raise schema_error(f"payload.{name} must be 1-1000")
    return int(value)
