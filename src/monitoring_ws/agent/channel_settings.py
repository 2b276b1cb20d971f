"""The agent's settings for sessions and tunnels (``"sessions"`` and ``"tunnels"`` in its
JSON file): both are off until the file says otherwise (docs/sessions.md)."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["SessionSettings", "TunnelSettings", "parse_sessions", "parse_tunnels"]


class ChannelSettingsError(ValueError):
    """A ``sessions`` or ``tunnels`` setting is wrong; the message says how to fix it."""


def _default_program() -> str:
    return "/bin/bash" if os.path.exists("/bin/bash") else "/bin/sh"


@attrs.frozen
class SessionSettings:
    """``"sessions": {"shell": true, "program": "/bin/bash", "user": "ops",
    "idleTimeoutS": 900}``."""

    shell: bool = False
    #: The shell started on the pseudo-terminal (as a login shell: ``-l``).
    program: str = attrs.field(factory=_default_program)
    #: The user the shell runs as (the agent must run as root to switch); None: the
    #: agent's own user.
    user: str | None = None
    #: A session with no byte in either direction for this long is closed.
    idle_timeout_s: float = 900.0


@attrs.frozen
class TunnelSettings:
    """``"tunnels": {"allow": ["127.0.0.1:5432"], "connectTimeoutS": 10}``."""

    #: ``(host, port)`` entries as written; ``addresses`` is what they resolved to.
    allow: tuple[tuple[str, int], ...] = ()
    connect_timeout_s: float = 10.0

    def allowed_addresses(self) -> frozenset[tuple[str, int]]:
        """The entries resolved once, as ``(address, port)``: a destination is allowed
        when the address it resolves to is one of these (a name whose DNS answer changes
        later cannot reach anything new). An entry that does not resolve allows nothing."""
        found: set[tuple[str, int]] = set()
        for host, port in self.allow:
            found.update((address, port) for address in resolve(host))
        return frozenset(found)


def resolve(host: str) -> list[str]:
    """The addresses of ``host`` (an IP literal is itself), normalized; [] when none."""
    try:
        return [str(ipaddress.ip_address(host))]
    except ValueError:
        pass
    try:
        answers = socket.getaddrinfo(host, None, type=socket.SOCK_STREAM)
    except (OSError, UnicodeError):
        return []
    return list(dict.fromkeys(str(ipaddress.ip_address(info[4][0])) for info in answers))


def parse_sessions(value: Any) -> SessionSettings:
    if value is None:
        return SessionSettings()
    if not isinstance(value, Mapping):
        raise ChannelSettingsError('sessions must be an object, e.g. {"shell": true}')
    unknown = set(value) - {"shell", "program", "user", "idleTimeoutS"}
    if unknown:
        raise ChannelSettingsError(f"sessions: unknown settings {sorted(unknown)}")
    shell = value.get("shell", False)
    program = value.get("program") or _default_program()
    user = value.get("user")
    idle = value.get("idleTimeoutS", 900.0)
    if not isinstance(shell, bool):
        raise ChannelSettingsError("sessions.shell must be true or false")
    if not isinstance(program, str) or not os.path.isabs(program):
        raise ChannelSettingsError("sessions.program must be an absolute path, e.g. /bin/bash")
    if user is not None and (not isinstance(user, str) or not user):
        raise ChannelSettingsError("sessions.user must be a user name")
    if isinstance(idle, bool) or not isinstance(idle, int | float) or idle <= 0:
        raise ChannelSettingsError("sessions.idleTimeoutS must be a positive number")
    return SessionSettings(shell, program, user, float(idle))


def parse_tunnels(value: Any) -> TunnelSettings:
    if value is None:
        return TunnelSettings()
    if not isinstance(value, Mapping):
        raise ChannelSettingsError('tunnels must be an object, e.g. {"allow": ["127.0.0.1:5432"]}')
    unknown = set(value) - {"allow", "connectTimeoutS"}
    if unknown:
        raise ChannelSettingsError(f"tunnels: unknown settings {sorted(unknown)}")
    entries = value.get("allow", [])
    if not isinstance(entries, list):
        raise ChannelSettingsError("tunnels.allow must be a list of host:port entries")
    allow = tuple(_entry(entry) for entry in entries)
    timeout = value.get("connectTimeoutS", 10.0)
    if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
        raise ChannelSettingsError("tunnels.connectTimeoutS must be a positive number")
    return TunnelSettings(allow, float(timeout))


def _entry(entry: Any) -> tuple[str, int]:
    """``host:port`` or ``[v6]:port``."""
    if not isinstance(entry, str):
        raise ChannelSettingsError("tunnels.allow entries must be strings like 127.0.0.1:5432")
    host, colon, port = entry.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ChannelSettingsError(
            f"tunnels.allow: {entry!r} is not host:port (e.g. 127.0.0.1:5432, [::1]:22)"
        )
    return host.lower(), int(port)
