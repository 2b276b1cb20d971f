"""The join token's text form, ``mwsj1.<id>.<secret>.<pin>[.<keyset>]`` (docs/agent.md,
"Enrolling"): what ``monitoring-ws token create`` prints and an agent presents to
``/enroll``. ``keyset`` pins the operator keys the agent is to trust (the SHA-256 of their
sorted list's canonical JSON): present only when the server names operator keys, so
four-part tokens stay as they were. Plain values, shared by the server and the agent."""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterable

import attrs

from .canonical import canonicalize

__all__ = ["JOIN_TOKEN_PREFIX", "JoinToken", "keyset_fingerprint", "parse_join_token"]

JOIN_TOKEN_PREFIX = "mwsj1"  # noqa: S105 - a format tag, not a secret
_ID = re.compile(r"[a-f0-9]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_PIN = re.compile(r"[a-f0-9]{64}|-")
_KEYSET = re.compile(r"[a-f0-9]{64}")


@attrs.frozen
class JoinToken:
    id: str
    secret: str = attrs.field(repr=False)
    #: The server certificate's SHA-256 (hex), or None without TLS.
    pin: str | None
    #: ``keyset_fingerprint`` of the operator keys enrollment will hand over, or None.
    keyset: str | None = None

    def __str__(self) -> str:
        text = f"{JOIN_TOKEN_PREFIX}.{self.id}.{self.secret}.{self.pin or '-'}"
        return text if self.keyset is None else f"{text}.{self.keyset}"


def keyset_fingerprint(keys: Iterable[str]) -> str:
    """What a token pins of a set of operator keys (``ed25519:...`` texts)."""
    return hashlib.sha256(canonicalize(sorted(keys))).hexdigest()


def parse_join_token(text: str) -> JoinToken:
    """The token's parts; ValueError saying what is wrong (never echoing the secret)."""
    parts = text.strip().split(".")
    if len(parts) not in {4, 5} or parts[0] != JOIN_TOKEN_PREFIX:
        raise ValueError(f"a join token looks like {JOIN_TOKEN_PREFIX}.<id>.<secret>.<pin>")
    _, token_id, secret, pin, *rest = parts
    keyset = rest[0] if rest else None
    if not (_ID.fullmatch(token_id) and _SECRET.fullmatch(secret) and _PIN.fullmatch(pin)):
        raise ValueError("the join token is damaged (copy it whole)")
    if keyset is not None and not _KEYSET.fullmatch(keyset):
        raise ValueError("the join token is damaged (copy it whole)")
    return JoinToken(token_id, secret, None if pin == "-" else pin, keyset)
