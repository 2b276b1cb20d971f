"""Who is really asking, behind a trusted proxy (``X-Forwarded-For``)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

__all__ = ["client_address", "trusted"]


def trusted(address: str, proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network]) -> bool:
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip in network for network in proxies)


def client_address(
    peer: str,
    forwarded_for: str | None,
    proxies: Sequence[ipaddress.IPv4Network | ipaddress.IPv6Network],
) -> str:
    """The address to count a connection against: ``peer``, or when ``peer`` is a trusted
    proxy, the right-most ``X-Forwarded-For`` entry that is not one (entries left of it
    are the client's own say and could be forged)."""
    if not proxies or forwarded_for is None or not trusted(peer, proxies):
        return peer
    for entry in reversed(forwarded_for.split(",")):
        candidate = entry.strip()
        if not candidate:
            continue
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return peer  # a proxy we trust wrote nonsense: count the proxy itself
        if not trusted(candidate, proxies):
            return candidate
    return peer
