"""Browser rules for the HTTP API: what a web page in the operator's browser cannot do.

Pure functions of a request's method and headers, so they are tested without a server.
A page on another site can send a "simple" cross-origin POST (``text/plain``, no
preflight) and, through DNS rebinding, make its own host name resolve to 127.0.0.1 and
read the answers. So: state-changing methods need ``Content-Type: application/json`` (a
page cannot send that cross-origin without a CORS preflight, which gets no CORS headers
here), requests marked cross-site by the browser are refused, and without API tokens the
``Host`` header must name this machine (docs/security.md).
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Collection, Mapping

import attrs

__all__ = ["Refusal", "check_browser_rules", "check_content_type", "host_name"]

#: Methods that change state: only with a JSON body type.
_WRITES = frozenset({"POST", "PUT", "PATCH", "DELETE"})
#: ``Sec-Fetch-Site`` values that mean another origin made the browser send this.
_FOREIGN_SITES = frozenset({"cross-site", "same-site"})
_DEFAULT_PORTS = {"http": 80, "https": 443}


@attrs.frozen
class Refusal:
    """An HTTP error the guard answers with."""

    status: int
    code: str
    message: str


def host_name(host: str) -> tuple[str, int | None] | None:
    """``(name, port)`` of a ``Host`` header value (lower case, brackets and a trailing dot
    removed); None when it is not one."""
    host = host.strip().lower()
    if not host:
        return None
    port: int | None = None
    if host.startswith("["):
        name, bracket, rest = host[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None
        port_text = rest[1:]
    else:
        name, _, port_text = host.partition(":")
    if port_text:
        if not port_text.isdigit() or int(port_text) > 65535:
            return None
        port = int(port_text)
    name = name.rstrip(".")
    return (name, port) if name else None


@functools.lru_cache(maxsize=256)  # parsing an address per request cost more than a lookup
def _is_loopback_name(name: str) -> bool:
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _same_origin(origin: str, host: str) -> bool:
    scheme, sep, rest = origin.partition("://")
    if not sep or scheme not in _DEFAULT_PORTS:
        return False
    theirs, ours = host_name(rest), host_name(host)
    if theirs is None or ours is None:
        return False
    default = _DEFAULT_PORTS[scheme]
    return theirs[0] == ours[0] and (theirs[1] or default) == (ours[1] or default)


def check_browser_rules(
    headers: Mapping[str, str],
    *,
    tokens_configured: bool,
    allowed_hosts: Collection[str],
) -> Refusal | None:
    """None when the request may go on; else the 403 refusal.

    ``headers`` is looked up with lower-case names. ``allowed_hosts`` are extra host
    names (lower case, no port) the API answers to when no API token is configured.
    """
    host = headers.get("host", "")
    fetch_site = headers.get("sec-fetch-site", "").strip().lower()
    if fetch_site in _FOREIGN_SITES:
        return Refusal(
            403, "cross_origin", "requests made by a web page on another site are refused"
        )
    origin = headers.get("origin")
    if origin is not None and not _same_origin(origin.strip().lower(), host):
        return Refusal(
            403, "cross_origin", f"requests from the origin {origin[:100]!r} are refused"
        )
    if not tokens_configured:
        parsed = host_name(host)
        if parsed is None or not (_is_loopback_name(parsed[0]) or parsed[0] in allowed_hosts):
            return Refusal(
                403,
                "host_not_allowed",
                f"the Host header {host[:100]!r} names neither this machine's loopback nor "
                "a name in allowed_hosts; use http://localhost:PORT, or add the name to "
                "allowed_hosts (or configure api_tokens)",
            )
    return None


def check_content_type(method: str, headers: Mapping[str, str]) -> Refusal | None:
    """415 for a state-changing request without ``Content-Type: application/json``."""
    if method.upper() not in _WRITES:
        return None
    mimetype = headers.get("content-type", "").partition(";")[0].strip().lower()
    if mimetype == "application/json":
        return None
    return Refusal(
        415,
        "unsupported_media_type",
        f"{method.upper()} needs Content-Type: application/json (got {mimetype or 'none'!r})",
    )
