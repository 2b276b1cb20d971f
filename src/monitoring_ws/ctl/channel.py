"""A channel to an agent through the API's WebSocket route (docs/api.md, "Sessions and
tunnels"): connect (the certificate pin checked before the token is sent), read the
server's ``opened`` or ``refused``."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json
import ssl
from collections.abc import Iterator
from typing import Any
from urllib.parse import urlencode, urlsplit

import trio
from trio_websocket import HandshakeError, WebSocketConnection, wrap_client_stream

from .settings import ClientSettings, CtlError

__all__ = [
    "EXIT_REFUSED",
    "EXIT_UNAVAILABLE",
    "ChannelRefused",
    "open_channel",
    "plain_errors",
]

SUBPROTOCOL = "monitoring-ws.channel.v1"
#: ctl's exit statuses (docs/cli.md): the channel was refused (by the agent's settings,
#: the token's scopes, an agent without channels); the server or the agent cannot be
#: reached.
EXIT_REFUSED = 77
EXIT_UNAVAILABLE = 69
CONNECT_TIMEOUT_S = 15.0
_UNAVAILABLE = {"agent_not_connected", "agent_elsewhere", "timeout"}


class ChannelRefused(CtlError):
    """The server or the agent said no; ``code`` and the reason."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message, EXIT_UNAVAILABLE if code in _UNAVAILABLE else EXIT_REFUSED)
        self.error_code = code


async def _stream(
    settings: ClientSettings, host: str, port: int, secure: bool
) -> trio.SocketStream | trio.SSLStream[trio.SocketStream]:
    raw = await trio.open_tcp_stream(host, port)
    if not secure:
        return raw
    context = ssl.create_default_context()
    if settings.cert_sha256 is not None:  # the pin decides, not the CAs
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    tls = trio.SSLStream(raw, context, server_hostname=host)
    await tls.do_handshake()
    der = tls.getpeercert(binary_form=True) or b""
    pin = settings.cert_sha256
    if pin is not None and not hmac.compare_digest(hashlib.sha256(der).hexdigest(), pin):
        await trio.aclose_forcefully(tls)
        raise CtlError(
            f"the server at {settings.url} does not present the pinned certificate: "
            "nothing was sent",
            EXIT_UNAVAILABLE,
        )
    return tls


async def open_channel(
    nursery: trio.Nursery, settings: ClientSettings, agent_id: str, query: dict[str, Any]
) -> WebSocketConnection:
    """The WebSocket of an opened channel (its ``opened`` read); ``ChannelRefused`` or
    ``CtlError`` (69) otherwise."""
    parts = urlsplit(settings.url)
    secure = parts.scheme == "https"
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if secure else 80)
    resource = f"{parts.path.rstrip('/')}/api/agents/{agent_id}/channel?{urlencode(query)}"
    headers = [] if settings.token is None else [(b"Authorization", f"Bearer {settings.token}")]
    try:
        with trio.fail_after(CONNECT_TIMEOUT_S):
            stream = await _stream(settings, host, port, secure)
            ws = await wrap_client_stream(
                nursery,
                stream,
                host if parts.port is None else f"{host}:{port}",
                resource,
                subprotocols=[SUBPROTOCOL],
                extra_headers=[(name, value.encode()) for name, value in headers],
                max_message_size=4 << 20,
            )
            first = json.loads(await ws.get_message())
    except HandshakeError as error:
        raise _refusal(error) from None
    except (OSError, trio.BrokenResourceError, trio.TooSlowError) as error:
        raise CtlError(f"cannot reach {settings.url}: {error}", EXIT_UNAVAILABLE) from None
    if first.get("type") == "refused":
        raise ChannelRefused(str(first.get("code")), str(first.get("message")))
    return ws


def _refusal(error: HandshakeError) -> CtlError:
    """The API's JSON error from a refused upgrade (401, 403, 400)."""
    status = getattr(error, "status_code", None)
    body = getattr(error, "body", b"") or b""
    try:
        detail = json.loads(body)["error"]
        code, message = str(detail["code"]), str(detail["message"])
    except (ValueError, KeyError, TypeError):
        code, message = "refused", f"the server refused the upgrade ({status})"
    if status == 401:
        return CtlError(f"{status} {code}: {message}", 2)
    return ChannelRefused(code, f"{status} {code}: {message}")


@contextlib.contextmanager
def plain_errors() -> Iterator[None]:
    """A ``CtlError`` raised inside a nursery comes out as itself (ctl prints it and
    exits with its status), not inside an exception group."""
    try:
        yield
    except BaseExceptionGroup as group:
        found = group.subgroup(lambda error: isinstance(error, CtlError))
        while isinstance(found, BaseExceptionGroup):
            found = found.exceptions[0]
        if isinstance(found, CtlError):
            raise found from None
        raise
