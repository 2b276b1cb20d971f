"""Dialing the server: directly or through an HTTP CONNECT proxy, then TLS (pinned or
system trust), then the WebSocket handshake."""

from __future__ import annotations

import base64
import hashlib
import ssl
import urllib.request
from urllib.parse import unquote, urlsplit

import trio
from trio_websocket import WebSocketConnection, wrap_client_stream

__all__ = ["PinMismatchError", "ProxyError", "dial", "proxy_for"]

#: The largest server frame accepted (the server's own limit is 1 MiB of API body).
MAX_MESSAGE_BYTES = 2 << 20
_MAX_PROXY_RESPONSE = 16_384


class PinMismatchError(Exception):
    """The server's certificate is not the pinned one."""


class ProxyError(Exception):
    """The proxy refused or broke the tunnel."""


def _bypassed(host: str, no_proxy: str) -> bool:
    """NO_PROXY: ``*``, or host names and domain suffixes (``.example.com``), ports ignored."""
    host = host.lower()
    for entry in no_proxy.split(","):
        name = entry.strip().lower().lstrip(".")
        if name.count(":") == 1:  # host:port (an IPv6 address has more colons)
            name = name.split(":")[0]
        if name == "*" or (name and (host == name or host.endswith("." + name))):
            return True
    return False


def proxy_for(url: str) -> str | None:
    """The proxy URL for ``url`` from HTTPS_PROXY / HTTP_PROXY / ALL_PROXY and NO_PROXY."""
    parts = urlsplit(url)
    proxies = urllib.request.getproxies_environment()
    if _bypassed(parts.hostname or "", proxies.get("no", "")):
        return None
    scheme = "https" if parts.scheme == "wss" else "http"
    return proxies.get(scheme) or proxies.get("all")


async def _read_head(stream: trio.SocketStream) -> bytes:
    response = b""
    while b"\r\n\r\n" not in response:
        chunk = await stream.receive_some(4096)
        if not chunk or len(response) > _MAX_PROXY_RESPONSE:
            raise ProxyError("the proxy closed the connection or sent no complete answer")
        response += chunk
    return response


def _check_tunnel(response: bytes) -> None:
    status_line = response.split(b"\r\n", 1)[0].decode("latin-1")
    if status_line.split(" ")[1:2] != ["200"]:
        raise ProxyError(f"the proxy refused the tunnel: {status_line}")


def _check_pin(tls: trio.SSLStream[trio.SocketStream], pin_sha256: str, where: str) -> None:
    der = tls.getpeercert(binary_form=True)
    if der is None or hashlib.sha256(der).hexdigest() != pin_sha256:
        raise PinMismatchError(f"the certificate of {where} is not the pinned one")


async def _tunnel(proxy_url: str, host: str, port: int) -> trio.SocketStream:
    proxy = urlsplit(proxy_url if "://" in proxy_url else f"http://{proxy_url}")
    if proxy.scheme != "http":
        raise ProxyError(f"only http:// proxies are supported, not {proxy.scheme}://")
    stream = await trio.open_tcp_stream(proxy.hostname or "", proxy.port or 8080)
    try:
        request = f"CONNECT {host}:{port} HTTP/1.1\r\nHost: {host}:{port}\r\n"
        if proxy.username is not None:
            credentials = f"{unquote(proxy.username)}:{unquote(proxy.password or '')}"
            token = base64.b64encode(credentials.encode()).decode()
            request += f"Proxy-Authorization: Basic {token}\r\n"
        await stream.send_all((request + "\r\n").encode())
        _check_tunnel(await _read_head(stream))
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
    return stream


async def dial(
    nursery: trio.Nursery, url: str, *, pin_sha256: str | None = None
) -> WebSocketConnection:
    """An open WebSocket to ``url``; its reader runs in ``nursery``."""
    parts = urlsplit(url)
    host = parts.hostname or ""
    secure = parts.scheme == "wss"
    port = parts.port or (443 if secure else 80)
    proxy = proxy_for(url)
    raw = await (_tunnel(proxy, host, port) if proxy else trio.open_tcp_stream(host, port))
    stream: trio.SocketStream | trio.SSLStream[trio.SocketStream] = raw
    try:
        if secure:
            context = ssl.create_default_context()
            if pin_sha256 is not None:
                # Pinning replaces the chain check: the fingerprint is compared before
                # anything is sent on this connection.
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            tls = trio.SSLStream(raw, context, server_hostname=host)
            await tls.do_handshake()
            if pin_sha256 is not None:
                _check_pin(tls, pin_sha256, f"{host}:{port}")
            stream = tls
        resource = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
        host_header = host if parts.port is None else f"{host}:{parts.port}"
        return await wrap_client_stream(
            nursery, stream, host_header, resource, max_message_size=MAX_MESSAGE_BYTES
        )
    except BaseException:
        await trio.aclose_forcefully(stream)
        raise
