"""Join tokens, and the agents enrolled with them (docs/agent.md, "Enrolling").

``monitoring-ws token create`` writes a token to the server's state directory and prints
it: ``mwsj1.<id>.<secret>.<pin>``, the pin being the SHA-256 fingerprint of the server's
TLS certificate (``-`` without TLS), so the agent knows whom to trust before it sends the
secret. The server keeps only the secret's SHA-256, the expiry, the uses left, the
agentId globs and whether the token may re-enroll known ids.

An enrollment draws a random **generation** for the agent and records it: the agent's key
is derived from the master secret, its id and that generation (``derive_enrolled_key``),
so a re-enrollment gives a new key and the old one stops working, and the file holds
nothing that signs (docs/security.md, "Enrollment"). Each enrollment takes one use and
records the generation in one transaction (several processes share the file).
"""

from __future__ import annotations

import contextlib
import fnmatch
import hashlib
import hmac
import json
import secrets
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Literal

import attrs

from ..private import private_file
from ..protocol.jointoken import JoinToken, parse_join_token

__all__ = [
    "JOIN_TOKEN_FILE",
    "JoinToken",
    "JoinTokens",
    "Refusal",
    "TokenInfo",
    "parse_join_token",
]

JOIN_TOKEN_FILE = "join-tokens.sqlite3"  # noqa: S105 - a file name
_SCHEMA = """
CREATE TABLE IF NOT EXISTS join_tokens (
    id TEXT PRIMARY KEY,
    secret_sha256 TEXT NOT NULL,
    expires_ms INTEGER NOT NULL,
    uses_left INTEGER NOT NULL,
    agents TEXT NOT NULL,
    created_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS enrolled (
    agent_id TEXT PRIMARY KEY,
    generation TEXT,
    token_id TEXT,
    updated_ms INTEGER NOT NULL
);
"""
#: Added after the first release: a token that may re-enroll ids already known.
_REENROLL = "ALTER TABLE join_tokens ADD COLUMN reenroll INTEGER NOT NULL DEFAULT 0"


@attrs.frozen
class TokenInfo:
    """What ``token list`` shows of a token (never its secret)."""

    id: str
    expires_ms: int
    uses_left: int
    agents: tuple[str, ...]
    reenroll: bool
    created_ms: int

    def to_json(self) -> dict[str, object]:
        return {
            "id": self.id,
            "expiresMs": self.expires_ms,
            "usesLeft": self.uses_left,
            "agents": list(self.agents),
            "reenroll": self.reenroll,
            "createdMs": self.created_ms,
        }


@attrs.frozen
class Refusal:
    """Why an enrollment was refused: ``reason`` is for the log and the audit; a
    ``conflict`` (the id is already known) is a 409, anything else the same 403."""

    reason: str
    conflict: bool = False


def _digest(secret: str) -> str:
    return hashlib.sha256(secret.encode()).hexdigest()


class JoinTokens:
    """The state directory's join tokens and enrolled agents (SQLite, 0600, WAL; opened
    per call for writes: a CLI process, workers and the server share it)."""

    def __init__(self, state_dir: Path) -> None:
        self.path = state_dir / JOIN_TOKEN_FILE
        #: Kept open for ``generation``: it is read on the event loop, per first frame.
        self._reader: sqlite3.Connection | None = None

    def _open(self) -> sqlite3.Connection:
        private_file(self.path)
        db = sqlite3.connect(str(self.path), isolation_level=None, timeout=5)
        db.execute("PRAGMA journal_mode=WAL")  # readers never wait for an enrollment
        db.executescript(_SCHEMA)
        columns = {row[1] for row in db.execute("PRAGMA table_info(join_tokens)")}
        if "reenroll" not in columns:
            db.execute(_REENROLL)
        private_file(self.path)  # the WAL companions, now that they exist
        return db

    def create(
        self,
        *,
        ttl_s: int,
        uses: int,
        agents: Sequence[str],
        pin: str | None,
        now_ms: int,
        reenroll: bool = False,
        keyset: str | None = None,
    ) -> JoinToken:
        token = JoinToken(secrets.token_hex(8), secrets.token_urlsafe(32), pin, keyset)
        row = (
            token.id,
            _digest(token.secret),
            now_ms + ttl_s * 1000,
            uses,
            json.dumps(list(agents)),
            now_ms,
            int(reenroll),
        )
        with contextlib.closing(self._open()) as db:
            db.execute(
                "INSERT INTO join_tokens (id, secret_sha256, expires_ms, uses_left, agents,"
                " created_ms, reenroll) VALUES (?, ?, ?, ?, ?, ?, ?)",
                row,
            )
        return token

    def redeem(
        self, token: JoinToken, agent_id: str, now_ms: int, *, known: bool = False
    ) -> str | Refusal:
        """Take one use for ``agent_id`` and draw its key generation; the generation, or
        why not. ``known``: the caller saw the id elsewhere (connected, in the state
        database); an id known here or there needs a token made with ``--reenroll``."""
        db = self._open()
        try:
            db.execute("BEGIN IMMEDIATE")  # one use, once, across processes
            row = db.execute(
                "SELECT secret_sha256, expires_ms, uses_left, agents, reenroll"
                " FROM join_tokens WHERE id = ?",
                (token.id,),
            ).fetchone()
            refusal = _refusal(row, token, agent_id, now_ms)
            if refusal is None and not row[4]:
                enrolled = db.execute(
                    "SELECT 1 FROM enrolled WHERE agent_id = ?", (agent_id,)
                ).fetchone()
                if known or enrolled is not None:
                    refusal = Refusal(f"{agent_id} is already known", conflict=True)
            generation = secrets.token_hex(16)
            if refusal is None:
                db.execute(
                    "UPDATE join_tokens SET uses_left = uses_left - 1 WHERE id = ?", (token.id,)
                )
                db.execute(
                    "INSERT OR REPLACE INTO enrolled VALUES (?, ?, ?, ?)",
                    (agent_id, generation, token.id, now_ms),
                )
            db.execute("COMMIT")
        finally:
            db.close()
        return generation if refusal is None else refusal

    def generation(self, agent_id: str) -> str | Literal[False] | None:
        """An enrolled agent's generation; None if it never enrolled; False if it was
        revoked since (no key works until it enrolls again). Raises sqlite3.Error."""
        if self._reader is None:
            if not self.path.exists():
                return None  # nothing was ever enrolled or revoked here
            self._reader = self._open()
        row = self._reader.execute(
            "SELECT generation FROM enrolled WHERE agent_id = ?", (agent_id,)
        ).fetchone()
        if row is None:
            return None
        generation: str | None = row[0]
        return False if generation is None else generation

    def revoke_agents(self, agent_ids: Sequence[str], now_ms: int) -> None:
        """Forget these agents' generations for good: taking an id off ``revoked_agents``
        later brings no key back (the id must enroll again, with ``--reenroll``)."""
        if not agent_ids:
            return
        rows = [(agent_id, now_ms) for agent_id in agent_ids]
        with contextlib.closing(self._open()) as db:
            db.executemany(
                "INSERT INTO enrolled VALUES (?, NULL, NULL, ?) ON CONFLICT (agent_id) DO "
                "UPDATE SET generation = NULL, updated_ms = excluded.updated_ms"
                " WHERE generation IS NOT NULL",
                rows,
            )

    def usable(self, now_ms: int) -> list[TokenInfo]:
        """Tokens still usable, oldest first."""
        with contextlib.closing(self._open()) as db:
            rows = db.execute(
                "SELECT id, expires_ms, uses_left, agents, reenroll, created_ms FROM join_tokens"
                " WHERE expires_ms >= ? AND uses_left > 0 ORDER BY created_ms, id",
                (now_ms,),
            ).fetchall()
        return [
            TokenInfo(row[0], row[1], row[2], tuple(json.loads(row[3])), bool(row[4]), row[5])
            for row in rows
        ]

    def revoke(self, token_id: str) -> bool:
        """Delete a token (whatever uses it had left); whether it existed."""
        with contextlib.closing(self._open()) as db:
            return db.execute("DELETE FROM join_tokens WHERE id = ?", (token_id,)).rowcount > 0

    def prune(self, now_ms: int) -> int:
        """Forget expired and used-up tokens; how many."""
        with contextlib.closing(self._open()) as db:
            gone = db.execute(
                "DELETE FROM join_tokens WHERE expires_ms < ? OR uses_left <= 0", (now_ms,)
            )
            return gone.rowcount

    def close(self) -> None:
        if self._reader is not None:
            self._reader.close()
            self._reader = None


def _refusal(
    row: tuple[str, int, int, str, int] | None, token: JoinToken, agent_id: str, now_ms: int
) -> Refusal | None:
    if row is None:
        return Refusal("unknown token")
    secret_sha256, expires_ms, uses_left, agents, _ = row
    if not hmac.compare_digest(secret_sha256, _digest(token.secret)):
        return Refusal("wrong secret")
    if expires_ms < now_ms:
        return Refusal("expired")
    if uses_left <= 0:
        return Refusal("used up")
    globs = json.loads(agents)
    if globs and not any(fnmatch.fnmatchcase(agent_id, glob) for glob in globs):
        return Refusal(f"{agent_id} is not among {globs}")
    return None
