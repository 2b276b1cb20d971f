"""The API's guard and audit as plain functions of a request, shared by the Quart app and
the lean command routes (``commandroutes.py``), so both answer alike."""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from ..audit import AuditLog
from ..config import ServerSettings
from ..serving.forwarded import client_address
from ..tokens import ApiToken, TokenSet, required_scope
from .guard import check_browser_rules, check_content_type
from .ui import is_ui_path

__all__ = ["Admitted", "IPNetwork", "Refused", "admit", "audit_request"]

IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

#: What a 401 says, and its header.
UNAUTHORIZED = "send Authorization: Bearer <api token>"
CHALLENGE = ("WWW-Authenticate", 'Bearer realm="monitoring-ws"')


@attrs.frozen
class Admitted:
    """A request the guard lets through: who it is from."""

    #: The client's address as a trusted proxy forwarded it (None: no proxies trusted).
    address: str | None
    token: ApiToken | None


@attrs.frozen
class Refused:
    """The guard's answer instead: a status, an error code and message, headers."""

    status: int
    code: str
    message: str
    extra: Mapping[str, Any] = attrs.field(factory=dict)
    headers: Sequence[tuple[str, str]] = ()
    #: The token that was presented and found (a 403 names it in the audit log).
    token: ApiToken | None = None
    #: As ``Admitted.address``: the audit line names the forwarded client.
    address: str | None = None


def admit(
    server: ServerSettings,
    tokens: TokenSet,
    proxies: Sequence[IPNetwork],
    *,
    method: str,
    path: str,
    headers: Mapping[str, str],
    authorization: str,
    peer: str,
    rule: str | None,
    agent_id: str | None,
) -> Admitted | Refused:
    """Browser rules (403), the token (401), its scope and agents (403), a JSON body for
    writes (415). ``headers`` by lower-case name; ``rule`` is the matched route (None when
    none matched: 404 and 405 come first, so no scope or type check then); ``proxies`` are
    ``server.proxy_networks()``, parsed once by the caller."""
    address = (
        client_address(peer or "unknown", headers.get("x-forwarded-for"), proxies)
        if proxies
        else None
    )
    refusal = check_browser_rules(
        headers, tokens_configured=bool(tokens), allowed_hosts=server.allowed_hosts
    )
    found: ApiToken | None = None
    # The dashboard's files hold no data: no token (the page asks for it), same rules.
    if refusal is None and tokens and not is_ui_path(path):
        scheme, _, presented = authorization.partition(" ")
        found = tokens.find(presented) if scheme.lower() == "bearer" else None
        if found is None:
            return Refused(401, "unauthorized", UNAUTHORIZED, headers=(CHALLENGE,), address=address)
        if rule is not None:
            scoped = _scope_refusal(found, method, rule, agent_id)
            if scoped is not None:
                return attrs.evolve(scoped, address=address)
    if refusal is None and rule is not None:
        refusal = check_content_type(method, headers)
    if refusal is not None:
        return Refused(refusal.status, refusal.code, refusal.message, token=found, address=address)
    return Admitted(address, found)


def _scope_refusal(token: ApiToken, method: str, rule: str, agent_id: str | None) -> Refused | None:
    missing = token.lacks(required_scope(method, rule))
    if missing is not None:
        message = f"the token {token.name} lacks the scope {missing}"
        return Refused(403, "forbidden", message, {"scope": missing}, token=token)
    if agent_id is not None and not token.reaches(agent_id):
        message = f"the token {token.name} does not reach agent {agent_id}"
        return Refused(403, "forbidden", message, {"scope": "agents"}, token=token)
    return None


def audit_request(
    audit: AuditLog,
    *,
    method: str,
    path: str,
    status: int,
    address: str | None,
    token: ApiToken | None,
    agent_id: str | None,
    more: Mapping[str, Any],
) -> None:
    """The request's audit line: every write, and every refusal (401, 403; rate-limited)."""
    refused = status in {401, 403}
    if method in {"GET", "HEAD"} and not refused:
        return
    fields = {
        "method": method,
        "path": path[:512],
        "status": status,
        "address": address,
        "token": None if token is None else token.name,
        "agentId": agent_id,
        **more,
    }
    # Anyone can make refusals: they are rate-limited (the rest counted).
    (audit.noisy if refused else audit.record)("refused" if refused else "request", **fields)
