"""Close codes and the one error type every protocol check raises."""

from __future__ import annotations

import enum
import re

__all__ = [
    "CloseCode",
    "ProtocolError",
    "close_reason",
    "parse_retry_after",
]


class CloseCode(enum.IntEnum):
    """WebSocket close codes of protocol v1 (docs/protocol.md, "Close codes")."""

    #: RFC 6455 7.4.1: normal closure.
    NORMAL = 1000
    #: RFC 6455 7.4.1: the server is shutting down; the reason carries a retry hint.
    GOING_AWAY = 1001
    #: RFC 6455 7.4.1: a binary frame; the protocol is text-only.
    UNSUPPORTED_DATA = 1003
    #: RFC 6455 7.4.1: a frame over the size limit.
    MESSAGE_TOO_BIG = 1009
    #: IANA registry: try again later (the agent read too slowly, or the server cannot
    #: check nonces now); retry hint.
    TRY_AGAIN_LATER = 1013
    #: Not valid JSON, or not the envelope/payload schema.
    MALFORMED = 4400
    #: Authentication failed (which check failed is never said to the peer).
    AUTH_FAILED = 4401
    #: The envelope's agentId is not the authenticated one.
    AGENT_MISMATCH = 4403
    #: No auth frame within the deadline, or three heartbeat intervals of silence.
    TIMEOUT = 4408
    #: A newer connection of the same agent took over.
    REPLACED = 4409
    #: Too many connection or authentication attempts; the reason carries a retry hint.
    TOO_MANY_ATTEMPTS = 4429


# What the peer is told. 4401 deliberately names no check (brief, section 2).
_PUBLIC_REASONS: dict[CloseCode, str] = {
    CloseCode.NORMAL: "bye",
    CloseCode.GOING_AWAY: "server shutting down",
    CloseCode.UNSUPPORTED_DATA: "binary frames are not accepted",
    CloseCode.MESSAGE_TOO_BIG: "frame too big",
    CloseCode.TRY_AGAIN_LATER: "try again later",
    CloseCode.MALFORMED: "malformed message",
    CloseCode.AUTH_FAILED: "authentication failed",
    CloseCode.AGENT_MISMATCH: "agentId does not match the authenticated agent",
    CloseCode.TIMEOUT: "timed out",
    CloseCode.REPLACED: "replaced by a newer connection",
    CloseCode.TOO_MANY_ATTEMPTS: "too many attempts",
}

_RETRY_AFTER = re.compile(r"^retry-after=(\d{1,6})(?:;|$)")


class ProtocolError(Exception):
    """A check failed: ``code`` is the close code to use, ``reason`` is for logs only."""

    def __init__(self, code: CloseCode, reason: str, retry_after_s: int | None = None) -> None:
        super().__init__(f"{int(code)} {code.name}: {reason}")
        self.code = code
        self.reason = reason
        self.retry_after_s = retry_after_s

    @property
    def public_reason(self) -> str:
        """The close reason safe to send to the peer (never says which auth check failed)."""
        return close_reason(self.code, self.retry_after_s)


def close_reason(code: CloseCode, retry_after_s: int | None = None) -> str:
    """The close-frame reason for ``code``; with a retry hint as ``retry-after=N; text``."""
    text = _PUBLIC_REASONS[code]
    if retry_after_s is None:
        return text
    if retry_after_s < 0:
        raise ValueError("retry_after_s must be >= 0")
    return f"retry-after={retry_after_s}; {text}"


def parse_retry_after(reason: str) -> int | None:
    """The retry hint in seconds from a close reason, or None when there is none."""
    match = _RETRY_AFTER.match(reason)
    return int(match.group(1)) if match else None
