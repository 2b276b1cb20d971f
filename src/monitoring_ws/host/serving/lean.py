"""The lean listener: trio streams with wsproto and h11, one task per connection, no
ASGI server between the socket and the app.

Hypercorn costs an idle WebSocket ~22 KB and every frame a few channel hops; a fleet of
idle agents is most of what a gateway holds, and each API request a hand-off from
Hypercorn's reader to an app task. This listener speaks just enough ASGI
(``websocket.*`` with the denial response, ``http.*``, the lifespan) to run the same
``HostApp`` with the same TLS, limits and close codes: on ``agent_listen`` one HTTP request
per connection (agents' ``/enroll``); on ``listen`` (``api_server = "lean"``) connections
kept alive, the whole API and dashboard.
"""

from __future__ import annotations

import contextlib
import logging
import ssl
from collections import Counter
from collections.abc import Callable, Mapping
from functools import partial
from pathlib import Path
from typing import Any

import trio
from wsproto import ConnectionType
from wsproto.events import Request
from wsproto.handshake import H11Handshake
from wsproto.utilities import RemoteProtocolError

from .forwarded import trusted
from .leanhttp import BAD_REQUEST, HEAD_TOO_LARGE, decoded_path, serve_http
from .leansocket import READ_BYTES, LeanSettings, LeanSocket
from .lifespan import lifespan
from .rawio import receive_some

__all__ = ["LeanSettings", "serve_lean", "server_context"]

log = logging.getLogger("monitoring_ws.lean")

#: How long a kept-alive connection may take to send its next request (Hypercorn's 5 s).
KEEP_ALIVE_TIMEOUT_S = 5.0
#: A request with more header lines than this is 431 (16 KiB of 3-byte headers would be
#: thousands for the parser to build).
MAX_HEADERS = 100


class _Unanswered:
    """Connections accepted and not yet handed to a route, by address: a socket that never
    sends its head holds a file descriptor until the handshake deadline, so they are
    counted from accept (the gateway counts only upgraded ones)."""

    __slots__ = ("_by_address", "_settings", "idle", "refused", "stopping", "total")

    def __init__(self, settings: LeanSettings) -> None:
        self._settings = settings
        self._by_address: Counter[str] = Counter()
        self.total = 0
        #: Sockets closed at accept for being over a cap (for tests and the log).
        self.refused = 0
        #: Connections waiting for a request (their first, or their next kept alive).
        self.idle: set[trio.CancelScope] = set()
        #: The listener is stopping: a connection is not kept alive past its answer.
        self.stopping = False

    def stop(self) -> None:
        """Idle connections end now (as Hypercorn's do); those answering get the grace."""
        self.stopping = True
        for wait in self.idle:
            wait.cancel()

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


async def _linger(stream: trio.abc.Stream) -> None:
    """Read (bounded: 256 KiB, 1 s) what the peer still sends after an error answer: a
    socket closed with unread input is reset, and the reset can destroy the answer."""
    if isinstance(stream, trio.abc.HalfCloseableStream):
        await stream.send_eof()  # the peer sees the end and can close its side at once
    left = 256 * 1024
    with trio.move_on_after(1):
        while left > 0 and (chunk := await stream.receive_some(READ_BYTES)):
            left -= len(chunk)


async def _refuse(
    stream: trio.abc.Stream, answer: bytes, client: tuple[str, int], what: str
) -> None:
    """Answer a request that cannot be served, with one log line."""
    log.info("%s from %s:%d: %s", what, *client, answer.split(b" ", 2)[1].decode())
    await stream.send_all(answer)
    await _linger(stream)


class _HeadTooLarge(Exception):
    """The request head is over the listener's ``max_head_bytes`` or ``MAX_HEADERS``."""


async def _read_head(stream: trio.abc.Stream, data: bytes, most: int) -> bytes | None:
    """The request's bytes up to the end of its head (and whatever followed in the same
    reads), after ``data`` already read; None when the peer left first. Raises
    ``_HeadTooLarge`` past ``most`` bytes or ``MAX_HEADERS`` lines."""
    while (end := data.find(b"\r\n\r\n")) < 0:
        if len(data) > most:
            raise _HeadTooLarge
        chunk = await receive_some(stream, READ_BYTES)
        if not chunk:
            return None
        data += chunk
    if end + 4 > most or data.count(b"\r\n", 0, end) > MAX_HEADERS:
        raise _HeadTooLarge
    return data


async def _first_head(
    stream: trio.abc.Stream,
    client: tuple[str, int],
    settings: LeanSettings,
    listener: _Unanswered,
) -> bytes | None:
    """The TLS handshake (if any) and the first request head, within the handshake
    deadline; a stop of the listener ends the wait at once, as it does kept-alive ones."""
    if listener.stopping:
        return None
    with trio.move_on_after(settings.handshake_timeout_s) as waiting:
        listener.idle.add(waiting)
        try:
            if isinstance(stream, trio.SSLStream):
                await stream.do_handshake()
            return await _head_or_431(stream, b"", client, settings.max_head_bytes)
        finally:
            listener.idle.discard(waiting)
    return None


async def _serve_request(
    app: Callable[..., Any],
    stream: trio.abc.Stream,
    head: bytes,
    client: tuple[str, int],
    settings: LeanSettings,
    *,
    secure: bool,
    listener: _Unanswered,
) -> bytes | None:
    """Answer one HTTP request; the next one's head if the connection is kept alive and
    it comes in time (and the listener is not stopping), else None."""
    keep_alive = settings.keep_alive and not listener.stopping
    left = await serve_http(app, stream, head, client, settings, tls=secure, keep_alive=keep_alive)
    if left is None or listener.stopping:
        return None
    with trio.move_on_after(KEEP_ALIVE_TIMEOUT_S) as wait:
        listener.idle.add(wait)
        try:
            return await _head_or_431(stream, left, client, settings.max_head_bytes)
        finally:
            listener.idle.discard(wait)
    return None


async def _head_or_431(
    stream: trio.abc.Stream, data: bytes, client: tuple[str, int], most: int
) -> bytes | None:
    """``_read_head``; a head over the limits is answered 431 (and None returned)."""
    try:
        return await _read_head(stream, data, most)
    except _HeadTooLarge:
        await _refuse(stream, HEAD_TOO_LARGE, client, "a request head over the limits")
        return None


def _wants_websocket(head: bytes) -> bool:
    lowered = head.partition(b"\r\n\r\n")[0].lower()
    if b"websocket" not in lowered:  # an API request, nearly always: no lines to split
        return False
    lines = lowered.split(b"\r\n")
    return any(line.startswith(b"upgrade:") and b"websocket" in line for line in lines[1:])


def _scope(request: Request, client: tuple[str, int], tls: bool) -> dict[str, Any]:
    raw_path, _, query = request.target.encode("latin-1", "replace").partition(b"?")
    headers = [(b"host", request.host.encode("latin-1"))]
    headers += [(name.lower(), value) for name, value in request.extra_headers]
    return {
        "type": "websocket",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "scheme": "wss" if tls else "ws",
        "http_version": "1.1",
        "path": decoded_path(raw_path),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": headers,
        "client": client,
        "server": None,
        "subprotocols": list(request.subprotocols),
        # A route may refuse with an HTTP answer instead of a close (the API's errors).
        "extensions": {"websocket.http.response": {}},
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
    unanswered: _Unanswered,
) -> None:
    """One connection, counted in ``unanswered`` from accept until a route takes it."""
    client = _peer(stream)
    if not unanswered.enter(client[0]):
        await trio.aclose_forcefully(stream)  # over a cap: the socket goes at once
        return
    counted, head = True, None
    try:
        if tls is not None:
            stream = trio.SSLStream(stream, tls, server_side=True)
        head = await _first_head(stream, client, settings, unanswered)
        while head is not None and not _wants_websocket(head):
            if counted and settings.keep_alive:  # it speaks HTTP: an API client's from here
                unanswered.leave(client[0])
                counted = False
            secure = tls is not None
            head = await _serve_request(
                app, stream, head, client, settings, secure=secure, listener=unanswered
            )
        if head is None:
            return
        handshake = H11Handshake(ConnectionType.SERVER)
        try:
            handshake.receive_data(head)
            request = next(e for e in handshake.events() if isinstance(e, Request))
        except (RemoteProtocolError, StopIteration, ValueError) as exc:
            # ValueError: wsproto decodes some headers as ASCII (UnicodeDecodeError).
            reason = str(exc)[:120] or type(exc).__name__
            await _refuse(stream, BAD_REQUEST, client, f"a bad upgrade request ({reason})")
            return
        unanswered.leave(client[0])  # the route's now: the gateway counts it from here
        counted = False
        # Not a route of its own: the app answers (the API's sockets, whose first message is
        # no agent's auth frame; elsewhere a close).
        scope = [_scope(request, client, tls is not None)]
        route = routes.get(scope[0]["path"])  # decoded: "/%61gent" is "/agent" too
        socket = LeanSocket(stream, handshake, settings, first_is_auth=route is not None)
        route = route or app
        # This frame lives as long as the agent: keep nothing here the socket does not need
        # (the handshake's h11 state, the request), and hand the scope over (popped from a
        # list, so that only the handler holds it). The handler is called itself: each
        # frame between it and the socket stays on the stack of every idle agent.
        del head, handshake, request
        await route(scope.pop(), socket.receive, socket.send)
        if not socket.closed:  # the app returned without closing: 1000, as Hypercorn does
            await socket.send({"type": "websocket.close", "code": 1000, "reason": ""})
    except (trio.BrokenResourceError, trio.ClosedResourceError, ssl.SSLError, OSError):
        pass  # the peer left mid-handshake or mid-send: nothing to answer
    except Exception:  # a bug must end this connection, not the listener with every agent
        log.exception("the lean listener's connection from %s:%d failed", *client)
    finally:
        if counted:
            unanswered.leave(client[0])
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
    run_lifespan: bool = False,
    task_status: trio.TaskStatus[list[str]] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve WebSocket ``routes`` (path -> ASGI handler) and plain HTTP through ``app``
    until ``shutdown_trigger()`` returns; then stop accepting, give connections
    ``graceful_timeout_s`` to end, and cancel the rest. ``run_lifespan``: ``app``'s
    lifespan (startup, shutdown) around it, as Hypercorn runs it for the API."""
    listeners = await _listeners(*bind, reuse_port=reuse_port)
    scheme = "https" if tls is not None else "http"
    urls = []
    for listener in listeners:
        name = listener.socket.getsockname()
        shown = f"[{name[0]}]" if ":" in name[0] else name[0]
        urls.append(f"{scheme}://{shown}:{name[1]}")

    unanswered = _Unanswered(settings)

    async def handle(stream: trio.SocketStream) -> None:
        await _serve_connection(routes, app, stream, settings, tls, unanswered=unanswered)

    running = lifespan(app) if run_lifespan else contextlib.nullcontext()
    async with running, trio.open_nursery() as connections:
        async with trio.open_nursery() as accepting:
            accepting.start_soon(
                partial(trio.serve_listeners, handle, listeners, handler_nursery=connections)
            )
            task_status.started(urls)
            await shutdown_trigger()
            accepting.cancel_scope.cancel()
        unanswered.stop()
        for listener in listeners:
            await listener.aclose()
        connections.cancel_scope.deadline = trio.current_time() + graceful_timeout_s
