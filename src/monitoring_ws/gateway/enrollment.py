"""Join tokens: an agent enrolls itself (``monitoring-ws agent enroll``) instead of an
operator copying a key to it (docs/agent.md, "Enrolling").

``monitoring-ws token create`` writes a token to the server's state directory and prints
it: ``mwsj1.<id>.<secret>.<pin>``, the pin being the SHA-256 fingerprint of the server's
TLS certificate (``-`` without TLS), so the agent knows whom to trust before it sends the
secret. The server keeps only the secret's SHA-256, the expiry, the uses left and the
agentId globs; each enrollment takes one use in a transaction (several processes share the
file).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import re
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path

import attrs

from ..private import private_file

__all__ = ["JOIN_TOKEN_FILE", "JoinToken", "JoinTokens", "parse_join_token"]

JOIN_TOKEN_FILE = "join-tokens.sqlite3"  # noqa: S105 - a file name
_PREFIX = "mwsj1"
_ID = re.compile(r"[a-f0-9]{16}")
_SECRET = re.compile(r"[A-Za-z0-9_-]{43}")
_PIN = re.compile(r"[a-f0-9]{64}|-")
_SCHEMA = """
CREATE TABLE IF NOT EXISTS join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    uses_left INTEGER NOT NULL,
    agents TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
"""


@attrs.frozen
class JoinToken:
    id: str
    secret: str = attrs.field(repr=False)
    #: The server certificate's SHA-256 (hex), or None without TLS.
    pin: str | None

    def __str__(self) -> str:
        return f"{_PREFIX}.{self.id}.{self.secret}.{self.pin or '-'}"


def parse_join_token(text: str) -> JoinToken:
    """The token's parts; ValueError saying what is wrong (never echoing the secret)."""
    parts = text.strip().split(".")
    if len(parts) != 4 or parts[0] != _PREFIX:
        raise ValueError(f"a join token looks like {_PREFIX}.<id>.<secret>.<pin>")
    _, token_id, secret, pin = parts
    if not (_ID.fullmatch(token_id) and _SECRET.fullmatch(secret) and _PIN.fullmatch(pin)):
        raise ValueError("the join token is damaged (copy it whole)")
    return JoinToken(token_id, secret, None if pin == "-" else pin)


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class JoinTokens:
    """The state directory's join tokens (SQLite, 0600; opened per call: a CLI process
    and the server share it)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOIN_TOKEN_FILE

    def _open(self) -> sqlite3.Connection:
        private_file(self.path)
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=5)
        db.executescript(_SCHEMA)
        return db

    def create(
        self, *, ttl_s: int, uses: int, agents: Sequence[str], pin: str | None, now_ms: int
    ) -> JoinToken:
        token = JoinToken(secrets.token_hex(8), secrets.token_urlsafe(32), pin)
        row = (
            token.id,
            _digest(token.secret),
            now_ms + ttl_s * 1000,
            uses,
            json.dumps(list(agents)),
            now_ms,
        )
        with contextlib.closing(self._open()) as db:
            db.execute("INSERT INTO join_tokens VALUES (?, ?, ?, ?, ?, ?)", row)
        return token

    def redeem(self, token: JoinToken, agent_id: str, now_ms: int) -> str | None:
        """Take one use for ``agent_id``; None when it was granted, else why not (for the
        log and the audit, never for the caller)."""
        db = self._open()
        try:
            db.execute("BEGIN IMMEDIATE")  # one use, once, across processes
            row = db.execute(
                "SELECT secret_sha256, expires_ms, uses_left, agents FROM join_tokens WHERE id = ?",
                (token.id,),
            ).fetchone()
            refusal = _refusal(row, token, agent_id, now_ms)
            if refusal is None:
                db.execute(
                    "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = ?", (token.id,)
                )
            db.execute("COMMIT")
        finally:
            db.close()
        return refusal

    def prune(self, now_ms: int) -> int:
        """Forget expired and used-up tokens; how many."""
        with contextlib.closing(self._open()) as db:
            gone = db.execute(
                "DELETE FROM join_tokens WHERE expires_ms < ? OR uses_left <= 0", (now_ms,)
            )
            return gone.rowcount


def _refusal(
    row: tuple[str, int, int, str] | None, token: JoinToken, agent_id: str, now_ms: int
) -> str | None:
    if row is None:
        return "unknown token"
    secret_sha256, expires_ms, uses_left, agents = row
    if not hmac.compare_digest(secret_sha256, _digest(token.secret)):
        return "wrong secret"
    if expires_ms < now_ms:
        return "expired"
    if uses_left <= 0:
        return "used up"
    globs = json.loads(agents)
    if globs and not any(fnmatch.fnmatchcase(agent_id, glob) for glob in globs):
        return f"{agent_id} is not among {globs}"
    return None
