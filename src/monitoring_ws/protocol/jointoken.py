"""The join token's text form, ``mwsj1.<id>.<secret>.<pin>`` (docs/agent.md,
"Enrolling"): what ``monitoring-ws token create`` prints and an agent presents to
``/enroll``. Plain values, shared by the server and the agent."""

from __future__ import annotations

import re

import attrs

__all__ = ["JOIN_TOKEN_PREFIX", "JoinToken", "parse_join_token"]

JOIN_TOKEN_PREFIX = "mwsj1"  # noqa: S105 - a format tag, not a secret
_ID = re.compile(r"[a-f0-9]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_PIN = re.compile(r"[a-f0-9]{64}|-")


@attrs.frozen
class JoinToken:
    id: str
    secret: str = attrs.field(repr=False)
    #: The server certificate's SHA-256 (hex), or None without TLS.
    pin: str | None

    def __str__(self) -> str:
        return f"{JOIN_TOKEN_PREFIX}.{self.id}.{self.secret}.{self.pin or '-'}"


def parse_join_token(text: str) -> JoinToken:
    """The token's parts; ValueError saying what is wrong (never echoing the secret)."""
    parts = text.strip().split(".")
    if len(parts) != 4 or parts[0] != JOIN_TOKEN_PREFIX:
        raise ValueError(f"a join token looks like {JOIN_TOKEN_PREFIX}.<id>.<secret>.<pin>")
    _, token_id, secret, pin = parts
    if not (_ID.fullmatch(token_id) and _SECRET.fullmatch(secret) and _PIN.fullmatch(pin)):
        raise ValueError("the join token is damaged (copy it whole)")
    return JoinToken(token_id, secret, None if pin == "-" else pin)
