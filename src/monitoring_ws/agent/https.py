"""Plain HTTPS requests from the agent (enrolling, fetching releases), blocking (run them in
a thread): TLS either pinned to one certificate, checked before anything is sent, or the
system's trust; plain HTTP only to loopback unless ``insecure``."""

from __future__ import annotations

import hashlib
import hmac
import http.client
import ssl
from urllib.parse import urlsplit

from ..configbase import is_loopback

__all__ = ["PinError", "open_connection"]

TIMEOUT_S = 15.0


class PinError(Exception):
    """The server did not present the pinned certificate (nothing was sent)."""


def open_connection(
    url: str, pin: str | None, *, insecure: bool = False, timeout_s: float = TIMEOUT_S
) -> http.client.HTTPConnection:
    """A connected ``HTTP(S)Connection`` to ``url``'s host whose certificate, with ``pin``,
    is the pinned one. ValueError for a URL that may not be used, OSError/PinError when
    connecting fails."""
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in {"https", "http"} or not host:
        raise ValueError(f"not an https:// URL: {url}")
    if parts.scheme == "http" and not (is_loopback(host) or insecure):
        raise ValueError(f"plain http:// is for loopback only (or --insecure): {url}")
    port = parts.port or (443 if parts.scheme == "https" else 80)
    connection: http.client.HTTPConnection
    if parts.scheme == "https":
        context = ssl.create_default_context()
        if pin is not None:  # trust exactly the pinned certificate, nothing else
            context.check_hostname = False
            context.verify_mode = ssl.CERT_NONE
        connection = http.client.HTTPSConnection(host, port, context=context, timeout=timeout_s)
    else:
        connection = http.client.HTTPConnection(host, port, timeout=timeout_s)
    try:
        connection.connect()
        if pin is not None and parts.scheme == "https":
            _check_pin(connection, pin, f"{host}:{port}")
    except BaseException:
        connection.close()
        raise
    return connection


def _check_pin(connection: http.client.HTTPConnection, pin: str, where: str) -> None:
    sock = connection.sock
    der = sock.getpeercert(binary_form=True) if isinstance(sock, ssl.SSLSocket) else None
    seen = hashlib.sha256(der or b"").hexdigest()
    if not hmac.compare_digest(seen, pin):
        raise PinError(
            f"the certificate of {where} is not the pinned one "
            f"(it presented {seen[:16]}...): nothing was sent"
        )
