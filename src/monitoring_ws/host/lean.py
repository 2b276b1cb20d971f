"""The lean agent listener: ``agent_listen`` served on trio streams with wsproto (and h11
for the few plain HTTP routes agents use), one task per connection, no ASGI server.

Hypercorn costs an idle WebSocket ~22 KB and every frame a few channel hops; a fleet of
idle agents is most of what a gateway holds. This listener speaks just enough ASGI
(``websocket.connect/receive/disconnect``, ``websocket.accept/send/close``; one HTTP
request per connection) to run the same ``HostApp`` and so the same ``AgentConnection``
code, with the same TLS, limits and close codes. The single-port mode stays on Hypercorn.
"""

from __future__ import annotations

import ipaddress
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any, cast

import trio
from wsproto import ConnectionType
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    Request,
    TextMessage,
)
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from ..asgi import TOO_BIG
from ..forwarded import trusted
from .leanhttp import BAD_REQUEST, HEAD_TOO_LARGE, serve_http

__all__ = ["LeanSettings", "serve_lean", "server_context"]

log = logging.getLogger("monitoring_ws.lean")

#: A request head (request line and headers) larger than this is 431.
MAX_HEAD_BYTES = 16 * 1024
#: A request with more header lines than this is 431 (16 KiB of 3-byte headers would be
#: thousands for the parser to build).
MAX_HEADERS = 100
READ_BYTES = 64 * 1024


class LeanSettings:
    """What the listener needs of ``[server]`` and the routes."""

    __slots__ = (
        "body_timeout_s",
        "handshake_timeout_s",
        "max_body_bytes",
        "max_first_message_bytes",
        "max_message_bytes",
        "max_unanswered",
        "max_unanswered_per_address",
        "proxies",
    )

    def __init__(
        self,
        *,
        max_message_bytes: int,
        handshake_timeout_s: float,
        body_timeout_s: float,
        max_body_bytes: int,
        max_first_message_bytes: int | None = None,
        max_unanswered: int = 2048,
        max_unanswered_per_address: int = 256,
        proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
    ) -> None:
        self.max_message_bytes = max_message_bytes
        #: A connection's first message (an agent's ``auth``) is read up to this only.
        self.max_first_message_bytes = min(
            max_message_bytes, max_first_message_bytes or max_message_bytes
        )
        self.handshake_timeout_s = handshake_timeout_s
        self.body_timeout_s = body_timeout_s
        self.max_body_bytes = max_body_bytes
        #: Connections held from accept until a route takes them (or their HTTP answer),
        #: in all and from one address: past them a new socket is closed at once.
        self.max_unanswered = max_unanswered
        self.max_unanswered_per_address = max_unanswered_per_address
        #: Trusted proxies (``trusted_proxies``): their sockets count only in all.
        self.proxies = proxies


class _Unanswered:
    """Connections accepted and not yet handed to a route, by address: a socket that never
    sends its head holds a file descriptor until the handshake deadline, so they are
    counted from accept (the gateway counts only upgraded ones)."""

    __slots__ = ("_by_address", "_settings", "refused", "total")

    def __init__(self, settings: LeanSettings) -> None:
        self._settings = settings
        self._by_address: Counter[str] = Counter()
        self.total = 0
        #: Sockets closed at accept for being over a cap (for tests and the log).
        self.refused = 0

    def enter(self, address: str) -> bool:
        settings = self._settings
        if self.total >= settings.max_unanswered or (
            self._by_address[address] >= settings.max_unanswered_per_address
            and not trusted(address, settings.proxies)
        ):
            self.refused += 1
            return False
        self.total += 1
        self._by_address[address] += 1
        return True

    def leave(self, address: str) -> None:
        self.total -= 1
        self._by_address[address] -= 1
        if not self._by_address[address]:
            del self._by_address[address]


class _Socket:
    """One upgraded connection as ASGI ``receive``/``send`` (``receive_nowait`` too: the
    gateway's read loop takes frames already parsed without a scheduler round trip)."""

    __slots__ = (
        "_connection",
        "_limit",
        "_part",
        "_part_size",
        "_pending",
        "_sending",
        "_settings",
        "_stream",
        "_too_big",
        "_turn",
        "closed",
        "connected",
    )

    def __init__(
        self,
        stream: trio.abc.Stream,
        handshake: H11Handshake,
        settings: LeanSettings,
    ) -> None:
        self._stream = stream
        self._connection: Connection | H11Handshake = handshake
        self._settings = settings
        self._pending: list[dict[str, Any]] = []
        self._part: list[Any] = []
        self._part_size = 0
        self._too_big = False
        #: The first message is an agent's ``auth``: read no more of it than its limit.
        self._limit = settings.max_first_message_bytes
        # One sender at a time (a stream allows no more). Whoever finds the stream busy
        # waits for its turn (the reader too, with a pong: a peer that sends pings and
        # reads nothing stops being read, instead of growing a queue). The event exists
        # only while someone waits; a lock would cost every idle agent.
        self._sending = False
        self._turn: trio.Event | None = None
        self.connected = False  # the app has asked for the connect message
        self.closed = False  # a close went out, or the peer is gone

    # -- receive ----------------------------------------------------------------------------

    def receive_nowait(self) -> dict[str, Any]:
        if self._pending:
            return self._pending.pop(0)
        raise trio.WouldBlock

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        pending = self._pending
        while not pending:  # read here, not in a helper: an idle agent waits in this frame
            connection = self._connection
            if self.closed or not isinstance(connection, Connection):
                return {"type": "websocket.disconnect", "code": 1006}
            try:
                data = await self._stream.receive_some(READ_BYTES)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                data = b""
            if not data:
                self.closed = True
                return {"type": "websocket.disconnect", "code": 1006}
            connection.receive_data(cast("bytes", data))  # SocketStream reads bytes
            await self._handle(connection)
        return pending.pop(0)

    async def _handle(self, connection: Connection) -> None:
        for event in connection.events():
            if isinstance(event, TextMessage | BytesMessage):
                text = isinstance(event, TextMessage)
                self._message(event.data, event.message_finished, text=text)
            elif isinstance(event, Ping):
                await self._write(connection.send(event.response()))
            elif isinstance(event, CloseConnection):
                if connection.state is ConnectionState.REMOTE_CLOSING:  # the peer closed
                    await self._write(connection.send(event.response()))
                elif connection.state is ConnectionState.OPEN:  # a frame wsproto refused
                    refusal = CloseConnection(code=event.code, reason=(event.reason or "")[:100])
                    await self._write(connection.send(refusal))
                self.closed = True
                self._pending.append({"type": "websocket.disconnect", "code": event.code})
                return

    def _message(self, data: Any, finished: bool, *, text: bool) -> None:
        self._part_size += len(data)
        if self._part_size > self._limit:
            self._too_big, self._part = True, []  # dropped as it comes, reported at its end
        elif not self._too_big:
            self._part.append(data)
        if not finished:
            return
        message: dict[str, Any] = {"type": "websocket.receive", "bytes": None, "text": None}
        if self._too_big:
            message[TOO_BIG] = self._part_size
        elif text:
            message["text"] = "".join(self._part)
        else:
            message["bytes"] = b"".join(self._part)
        self._pending.append(message)
        self._part, self._part_size, self._too_big = [], 0, False
        self._limit = self._settings.max_message_bytes

    # -- send -------------------------------------------------------------------------------

    async def send(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        connection = self._connection
        if kind == "websocket.accept" and isinstance(connection, H11Handshake):
            head = connection.send(AcceptConnection())  # no extension: no compression
            accepted = connection.connection
            assert accepted is not None  # noqa: S101 - accepting made it
            self._connection = accepted  # the handshake (and its h11 state) is dropped
            await self._write(head)
        elif kind == "websocket.close" and isinstance(connection, H11Handshake):
            self.closed = True  # closed before accept: a 403, as Hypercorn answers
            await self._write(connection.send(RejectConnection(status_code=403)))
        elif self.closed or not isinstance(connection, Connection):
            return  # after the peer has gone, as Hypercorn does: ignored
        elif kind == "websocket.send":
            text = message.get("text")
            payload = TextMessage(data=text) if text is not None else BytesMessage(message["bytes"])
            await self._write(connection.send(payload))
        elif kind == "websocket.close" and connection.state is ConnectionState.OPEN:
            closing = CloseConnection(code=message["code"], reason=message.get("reason") or "")
            self.closed = True
            await self._write(connection.send(closing))

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        while self._sending:
            if self._turn is None:
                self._turn = trio.Event()
            await self._turn.wait()
        self._sending = True
        try:
            await self._stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
        finally:
            self._sending = False
            turn, self._turn = self._turn, None
            if turn is not None:
                turn.set()


async def _linger(stream: trio.abc.Stream) -> None:
    """Read (bounded: 256 KiB, 1 s) what the peer still sends after an error answer: a
    socket closed with unread input is reset, and the reset can destroy the answer."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()  # the peer sees the end and can close its side at once
    left = 256 * 1024
    with trio.move_on_after(1):
        while left > 0 and (chunk := await stream.receive_some(READ_BYTES)):
            left -= len(chunk)


class _HeadTooLarge(Exception):
    """The request head is over ``MAX_HEAD_BYTES`` or ``MAX_HEADERS`` (431)."""


async def _read_head(stream: trio.abc.Stream) -> bytes | None:
    """The request's bytes up to the end of its head (and whatever followed in the same
    reads); None when the peer left first. Raises ``_HeadTooLarge``."""
    data = b""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > MAX_HEAD_BYTES:
            raise _HeadTooLarge
        chunk = await stream.receive_some(READ_BYTES)
        if not chunk:
            return None
        data += chunk
    if end + 4 > MAX_HEAD_BYTES or data.count(b"\r\n", 0, end) > MAX_HEADERS:
        raise _HeadTooLarge
    return data


def _wants_websocket(head: bytes) -> bool:
    lines = head.partition(b"\r\n\r\n")[0].lower().split(b"\r\n")
    return any(line.startswith(b"upgrade:") and b"websocket" in line for line in lines[1:])


def _scope(request: Request, client: tuple[str, int], tls: bool) -> dict[str, Any]:
    path, _, query = request.target.partition("?")
    headers = [(b"host", request.host.encode("latin-1"))]
    headers += [(name.lower(), value) for name, value in request.extra_headers]
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "wss" if tls else "ws",
        "http_version": "1.1",
        "path": path,
        "raw_path": path.encode("latin-1", "replace"),
        "query_string": query.encode("latin-1", "replace"),
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": None,
        "subprotocols": list(request.subprotocols),
        "extensions": {},
    }


def _peer(stream: trio.abc.Stream) -> tuple[str, int]:
    if not isinstance(stream, trio.SocketStream):
        return ("unknown", 0)
    try:
        address = stream.socket.getpeername()
    except OSError:
        return ("unknown", 0)
    return (str(address[0]), int(address[1]))


async def _serve_connection(
    routes: Mapping[str, Callable[..., Any]],
    app: Callable[..., Any],
    stream: trio.abc.Stream,
    settings: LeanSettings,
    tls: ssl.SSLContext | None,
    *,
    client: tuple[str, int],
    taken: Callable[[], None],
) -> None:
    """One connection; ``taken()`` once a route has it (it is no longer unanswered)."""
    head = None
    try:
        with trio.move_on_after(settings.handshake_timeout_s):
            if tls is not None:
                stream = trio.SSLStream(stream, tls, server_side=True)
                await stream.do_handshake()
            try:
                head = await _read_head(stream)
            except _HeadTooLarge:
                log.info("a request head over the limits from %s:%d: 431", *client)
                await stream.send_all(HEAD_TOO_LARGE)
                await _linger(stream)
                return
        if head is None:
            return
        if not _wants_websocket(head):
            await serve_http(app, stream, head, client, settings, tls=tls is not None)
            return
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.receive_data(head)
            request = next(e for e in handshake.events() if isinstance(e, Request))
        except (RemoteProtocolError, StopIteration, ValueError) as exc:
            # ValueError: wsproto decodes some headers as ASCII (UnicodeDecodeError).
            reason = str(exc)[:120] or type(exc).__name__
            log.info("a bad upgrade request from %s:%d: 400 (%s)", *client, reason)
            await stream.send_all(BAD_REQUEST)
            await _linger(stream)
            return
        taken()
        route = routes.get(request.target.partition("?")[0])
        socket = _Socket(stream, handshake, settings)
        if route is None:  # refused before accept: a 403, as Hypercorn answers
            await socket.send({"type": "websocket.close", "code": 1000, "reason": ""})
            return
        # This frame lives as long as the agent: keep nothing here the socket does not need
        # (the handshake's h11 state, the request), and hand the scope over (popped from a
        # list, so that only the handler holds it). The handler is called itself: each
        # frame between it and the socket stays on the stack of every idle agent.
        scope = [_scope(request, client, tls is not None)]
        del head, handshake, request
        await route(scope.pop(), socket.receive, socket.send)
        if not socket.closed:  # the app returned without closing: 1000, as Hypercorn does
            await socket.send({"type": "websocket.close", "code": 1000, "reason": ""})
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        pass  # the peer left mid-handshake or mid-send: nothing to answer
    except Exception:  # a bug must end this connection, not the listener with every agent
        log.exception("the agent listener's connection from %s:%d failed", *client)
    finally:
        with trio.move_on_after(1) as cleanup:
            cleanup.shield = True
            await trio.aclose_forcefully(stream) if tls is not None else await stream.aclose()


async def _listeners(host: str, port: int, *, reuse_port: bool) -> list[trio.SocketListener]:
    """Bound, listening sockets for ``host`` (every address it resolves to)."""
    found = await trio.socket.getaddrinfo(
        host or None, port, type=trio.socket.SOCK_STREAM, flags=trio.socket.AI_PASSIVE
    )
    listeners: list[trio.SocketListener] = []
    for family, kind, proto, _, address in dict.fromkeys(found):
        sock = trio.socket.socket(family, kind, proto)
        try:
            sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEADDR, 1)
            if reuse_port:  # the workers of ``serve --workers`` share the port
                sock.setsockopt(trio.socket.SOL_SOCKET, trio.socket.SO_REUSEPORT, 1)
            if family == trio.socket.AF_INET6:
                sock.setsockopt(trio.socket.IPPROTO_IPV6, trio.socket.IPV6_V6ONLY, 1)
            await sock.bind(address)
            sock.listen(4096)  # reconnect storms arrive all at once
        except OSError:
            sock.close()
            for listener in listeners:
                await listener.aclose()
            raise
        listeners.append(trio.SocketListener(sock))
    return listeners


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2 or later with the given certificate (what Hypercorn's own would allow)."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.load_cert_chain(cert, key)
    return context


async def serve_lean(
    routes: Mapping[str, Callable[..., Any]],
    app: Callable[..., Any],
    bind: tuple[str, int],
    settings: LeanSettings,
    *,
    tls: ssl.SSLContext | None,
    shutdown_trigger: Callable[[], Any],
    graceful_timeout_s: float,
    reuse_port: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket ``routes`` (path -> ASGI handler) and plain HTTP through ``app``
    until ``shutdown_trigger()`` returns; then stop accepting, give connections
    ``graceful_timeout_s`` to end, and cancel the rest."""
    listeners = await _listeners(*bind, reuse_port=reuse_port)
    scheme = "https" if tls is not None else "http"
    urls = []
    for listener in listeners:
        name = listener.socket.getsockname()
        shown = f"[{name[0]}]" if ":" in name[0] else name[0]
        urls.append(f"{scheme}://{shown}:{name[1]}")

    unanswered = _Unanswered(settings)

    async def handle(stream: trio.SocketStream) -> None:
        client = _peer(stream)
        if not unanswered.enter(client[0]):
            await trio.aclose_forcefully(stream)  # over a cap: the socket goes at once
            return
        left = False

        def taken() -> None:
            nonlocal left
            if not left:
                left = True
                unanswered.leave(client[0])

        try:
            await _serve_connection(routes, app, stream, settings, tls, client=client, taken=taken)
        finally:
            taken()

    async with trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(
                partial(trio.serve_listeners, handle, listeners, handler_nursery=connections)
            )
            task_status.started(urls)
            await shutdown_trigger()
            accepting.cancel_scope.cancel()
        for listener in listeners:
            await listener.aclose()
        connections.cancel_scope.deadline = trio.current_time() + graceful_timeout_s
