"""API tokens with names, scopes and an agent filter (docs/api.md, "Authentication").

``[server] api_tokens`` holds plain strings (every scope, named by a fingerprint, as
before) or tables::

    {name = "grafana", token_sha256 = "<hex>", scopes = ["metrics:read"]}
    {name = "deploy", token = "...", scopes = ["commands:send:ping,run"], agents = ["web-*"]}

Only a token's SHA-256 is kept in memory; presented tokens are hashed and compared in
constant time against every configured one. Pure code: no Quart, no I/O.
"""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import attrs

from ..configbase import ConfigError

__all__ = ["SCOPES", "ApiToken", "TokenSet", "parse_tokens", "required_scope"]

#: Every scope a token may hold; plain-string tokens hold them all.
SCOPES = frozenset(
    {
        "agents:read",
        "agents:label",
        "jobs:create",
        "commands:send",
        "commands:cancel",
        "config:read",
        "metrics:read",
        "events:read",
        "sessions:shell",
        "tunnels:open",
        "recordings:read",
    }
)
_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX = re.compile(r"[0-9a-f]{64}")
_KEYS = {"name", "token", "token_sha256", "scopes", "agents"}


@attrs.frozen
class ApiToken:
    """One configured token: its name, its hash, what it may do and to which agents."""

    name: str
    sha256: bytes = attrs.field(repr=False)
    scopes: frozenset[str] = SCOPES
    #: ``commands:send`` only for these command names (None: any).
    commands: frozenset[str] | None = None
    #: agentId globs (``fnmatch``: ``web-*``); empty: every agent.
    agents: tuple[str, ...] = ()

    @property
    def credential(self) -> str:
        """How records and logs name it (never the token itself)."""
        return f"token:{self.name}"

    def lacks(self, scope: str) -> str | None:
        """The missing scope, or None when the token holds it."""
        return None if scope in self.scopes else scope

    def may_send(self, command: str) -> bool:
        return "commands:send" in self.scopes and (
            self.commands is None or command in self.commands
        )

    def reaches(self, agent_id: str) -> bool:
        return not self.agents or any(fnmatch.fnmatchcase(agent_id, g) for g in self.agents)

    @classmethod
    def plain(cls, token: str) -> ApiToken:
        """A plain-string token: every scope, every agent, named by a fingerprint."""
        digest = hashlib.sha256(token.encode()).digest()
        return cls(digest.hex()[:12], digest)

    @classmethod
    def from_table(cls, table: Mapping[str, Any], index: int) -> ApiToken:
        where = f"api_tokens[{index}]"
        unknown = sorted(set(table) - _KEYS)
        if unknown:
            raise ConfigError(f"{where}: unknown key {', '.join(unknown)}")
        name = table.get("name")
        if not isinstance(name, str) or not _NAME.fullmatch(name):
            raise ConfigError(f"{where}: name must be 1-64 of [A-Za-z0-9._-]")
        if ("token" in table) == ("token_sha256" in table):
            raise ConfigError(f"{where} ({name}): give token or token_sha256, one of them")
        if "token" in table:
            token = table["token"]
            if not isinstance(token, str) or len(token) < 16:
                raise ConfigError(f"{where} ({name}): token must be at least 16 characters")
            digest = hashlib.sha256(token.encode()).digest()
        else:
            hexed = table["token_sha256"]
            if not isinstance(hexed, str) or not _HEX.fullmatch(hexed.lower()):
                raise ConfigError(f"{where} ({name}): token_sha256 must be 64 hex digits")
            digest = bytes.fromhex(hexed)
        scopes, commands = _scopes(table.get("scopes"), f"{where} ({name})")
        agents = table.get("agents", [])
        if isinstance(agents, str):
            agents = [agents]
        if not isinstance(agents, list) or not all(isinstance(a, str) and a for a in agents):
            raise ConfigError(f"{where} ({name}): agents must be a list of agentId globs")
        return cls(name, digest, scopes, commands, tuple(agents))


def _scopes(value: Any, where: str) -> tuple[frozenset[str], frozenset[str] | None]:
    if not isinstance(value, list) or not value or not all(isinstance(s, str) for s in value):
        known = ", ".join(sorted(SCOPES))
        raise ConfigError(f"{where}: scopes must be a non-empty list of: {known}")
    scopes: set[str] = set()
    commands: frozenset[str] | None = None
    for written in value:
        scope = written
        if written.startswith("commands:send:"):  # commands:send:ping,run
            names = written.removeprefix("commands:send:").split(",")
            if not all(names):
                raise ConfigError(f"{where}: {written!r} names no command")
            commands = (commands or frozenset()) | frozenset(names)
            scope = "commands:send"
        if scope not in SCOPES:
            raise ConfigError(f"{where}: unknown scope {written!r} (known: {sorted(SCOPES)})")
        scopes.add(scope)
    return frozenset(scopes), commands


def parse_tokens(value: Any) -> tuple[ApiToken, ...]:
    """``api_tokens`` as written: strings and tables (already parsed tokens pass)."""
    if isinstance(value, str) or not isinstance(value, list | tuple):
        raise ConfigError("api_tokens must be a list of tokens or token tables")
    tokens: list[ApiToken] = []
    for index, item in enumerate(value):
        if isinstance(item, ApiToken):
            tokens.append(item)
        elif isinstance(item, str):
            if len(item) < 16:
                raise ConfigError("api_tokens must be at least 16 characters each")
            tokens.append(ApiToken.plain(item))
        elif isinstance(item, Mapping):
            tokens.append(ApiToken.from_table(item, index))
        else:
            raise ConfigError(f"api_tokens[{index}] must be a string or a table")
    names = [token.name for token in tokens]
    if len(set(names)) != len(names):
        raise ConfigError("api_tokens: two tokens have the same name")
    return tuple(tokens)


class TokenSet:
    """Finds the configured token a request presents, in constant time per token."""

    def __init__(self, tokens: Iterable[ApiToken]) -> None:
        self.tokens = tuple(tokens)
        #: Goes up with each ``replace``: who holds a token looks again only then.
        self.version = 0
        self._watchers: list[Callable[[], None]] = []

    def watch(self, changed: Callable[[], None]) -> None:
        """Call ``changed`` after each ``replace`` (open event streams check their token)."""
        self._watchers.append(changed)

    def replace(self, tokens: Iterable[ApiToken]) -> None:
        """SIGHUP: the new list takes effect with the next request, and open streams
        whose token is gone (or changed) end."""
        self.tokens = tuple(tokens)
        self.version += 1
        for changed in self._watchers:
            changed()

    def holds(self, token: ApiToken) -> bool:
        """Whether ``token`` is still configured, as it was."""
        return token in self.tokens

    def __bool__(self) -> bool:
        return bool(self.tokens)

    def find(self, presented: str) -> ApiToken | None:
        digest = hashlib.sha256(presented.encode()).digest()
        # Compare with every token: timing says nothing of which one nearly matched.
        matches = [hmac.compare_digest(digest, token.sha256) for token in self.tokens]
        return self.tokens[matches.index(True)] if any(matches) else None


def required_scope(method: str, rule: str | None) -> str:
    """The scope a request needs, from its method and route (``rule``: its URL rule)."""
    if rule == "/metrics":
        return "metrics:read"
    if rule is not None and rule.endswith("/config"):
        return "config:read"
    if rule == "/api/events":
        return "events:read"
    if rule is not None and rule.startswith("/api/recordings"):
        return "recordings:read"
    if rule == "/api/jobs" and method == "POST":  # and the command's commands:send rule
        return "jobs:create"
    if rule is not None and rule.endswith("/labels") and method == "PATCH":
        return "agents:label"
    if method == "DELETE":
        return "commands:cancel"
    if method in {"GET", "HEAD", "OPTIONS"}:
        return "agents:read"
    return "commands:send"
