"""One upgraded connection of the lean agent listener (``lean.py``) as ASGI
``receive``/``send``, and the listener's settings."""

from __future__ import annotations

import ipaddress
from typing import Any, cast

import trio
from wsproto.connection import Connection, ConnectionState
from wsproto.events import (
    AcceptConnection,
    BytesMessage,
    CloseConnection,
    Ping,
    RejectConnection,
    RejectData,
    TextMessage,
)
from wsproto.handshake import H11Handshake

from ..plugins import TOO_BIG
from .rawio import receive_some, send_all, write_now
from .response import http_date

__all__ = ["MAX_HEAD_BYTES", "READ_BYTES", "LeanSettings", "LeanSocket"]

READ_BYTES = 64 * 1024
#: A request head larger than this is 431 (the agents' listener; the API's sets its own).
MAX_HEAD_BYTES = 16 * 1024


def _text_frame(text: str) -> bytes:
    """A whole text message as one server frame (RFC 6455 5.2: FIN, opcode 1, unmasked),
    the bytes wsproto writes for it without its per-frame Python."""
    payload = text.encode()
    size = len(payload)
    if size < 126:
        return bytes((0x81, size)) + payload
    if size < 1 << 16:
        return b"\x81\x7e" + size.to_bytes(2, "big") + payload
    return b"\x81\x7f" + size.to_bytes(8, "big") + payload


class LeanSettings:
    """What the listener needs of ``[server]`` and the routes."""

    __slots__ = (
        "body_timeout_s",
        "handshake_timeout_s",
        "keep_alive",
        "max_body_bytes",
        "max_first_message_bytes",
        "max_head_bytes",
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
        max_unanswered: int | None = None,
        max_unanswered_per_address: int | None = None,
        proxies: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = (),
        keep_alive: bool = False,
        max_head_bytes: int = MAX_HEAD_BYTES,
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
        #: in all and from one address: past them a new socket is closed at once (None:
        #: the gateway's defaults, 2,048 and 256).
        self.max_unanswered = max_unanswered or 2048
        self.max_unanswered_per_address = max_unanswered_per_address or 256
        #: Trusted proxies (``trusted_proxies``): their sockets count only in all.
        self.proxies = proxies
        #: HTTP connections serve request after request (the API); else one each (agents).
        self.keep_alive = keep_alive
        #: A request head (request line and headers) larger than this is 431.
        self.max_head_bytes = max_head_bytes


class LeanSocket:
    """One upgraded connection as ASGI ``receive``/``send``; ``receive`` returns a message
    already parsed at once (no scheduler round trip)."""

    __slots__ = (
        "_answered",
        "_backlog",
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
        *,
        first_is_auth: bool = True,
    ) -> None:
        self._stream = stream
        self._connection: Connection | H11Handshake = handshake
        self._settings = settings
        self._pending: list[dict[str, Any]] = []
        self._part: list[Any] = []
        self._part_size = 0
        self._too_big = False
        #: The first message is an agent's ``auth``: read no more of it than its limit.
        self._limit = (
            settings.max_first_message_bytes if first_is_auth else settings.max_message_bytes
        )
        # One sender at a time (a stream allows no more). Whoever finds the stream busy
        # waits for its turn (the reader too, with a pong: a peer that sends pings and
        # reads nothing stops being read, instead of growing a queue). The event exists
        # only while someone waits; a lock would cost every idle agent.
        self._sending = False
        self._turn: trio.Event | None = None
        #: What the socket did not take of a frame written at once (``flush`` sends it).
        self._backlog = b""
        #: Set when the upgrade is answered, for a reader that came first (rarely made).
        self._answered: trio.Event | None = None
        self.connected = False  # the app has asked for the connect message
        self.closed = False  # a close went out, or the peer is gone

    # -- receive ----------------------------------------------------------------------------

    async def receive(self) -> dict[str, Any]:
        if not self.connected:
            self.connected = True
            return {"type": "websocket.connect"}
        pending = self._pending
        while not pending:  # read here, not in a helper: an idle agent waits in this frame
            connection = self._connection
            if not self.closed and isinstance(connection, H11Handshake):
                # The app reads before it has answered the upgrade (Quart does, from a task
                # of its own): the next message waits for the answer.
                if self._answered is None:
                    self._answered = trio.Event()
                await self._answered.wait()
                continue
            if self.closed or not isinstance(connection, Connection):
                return {"type": "websocket.disconnect", "code": 1006}
            try:
                data = await receive_some(self._stream, READ_BYTES)
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
            accept = AcceptConnection(  # no extension: no compression
                subprotocol=message.get("subprotocol"),
                extra_headers=[*(message.get("headers") or ()), (b"date", http_date())],
            )
            head = connection.send(accept)
            accepted = connection.connection
            assert accepted is not None  # noqa: S101 - accepting made it
            self._connection = accepted  # the handshake (and its h11 state) is dropped
            self._answer()
            await self._write(head)
        elif kind == "websocket.http.response.start" and isinstance(connection, H11Handshake):
            # Refused with an HTTP answer (the ASGI denial response): the API's JSON error.
            headers = list(message.get("headers") or ())
            reject = RejectConnection(status_code=message["status"], headers=headers, has_body=True)
            await self._write(connection.send(reject))
        elif kind == "websocket.http.response.body" and isinstance(connection, H11Handshake):
            finished = not message.get("more_body", False)
            data = RejectData(data=message.get("body", b""), body_finished=finished)
            await self._write(connection.send(data))
            self.closed = finished
            if finished:
                self._answer()
        elif kind == "websocket.close" and isinstance(connection, H11Handshake):
            self.closed = True  # closed before accept: a 403, as Hypercorn answers
            self._answer()
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

    def send_text_now(self, text: str) -> bool | None:
        """Write a text frame at once, from the caller's task (no writer task for it):
        True when it is out (or the peer is gone); None when the socket took part of it,
        then ``flush`` sends the rest and nothing else goes before; False when it cannot
        be written now (another write is under way): send it with ``send``."""
        connection, stream = self._connection, self._stream
        if (
            self._sending
            or self.closed
            or type(stream) is not trio.SocketStream
            or not isinstance(connection, Connection)
            or connection.state is not ConnectionState.OPEN
        ):
            return False
        data = _text_frame(text)
        try:
            written = write_now(stream, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True  # as ``_write`` does: the peer is gone
            return True
        if written == len(data):
            return True
        self._sending = True  # held until ``flush`` has sent the rest
        self._backlog = data[written:]
        return None

    async def flush(self) -> None:
        """Send the rest of a frame ``send_text_now`` began."""
        backlog, self._backlog = self._backlog, b""
        await self._send_and_pass(backlog)

    def _answer(self) -> None:
        if self._answered is not None:
            self._answered.set()
            self._answered = None

    async def _write(self, data: bytes) -> None:
        if not data:
            return
        while self._sending:
            if self._turn is None:
                self._turn = trio.Event()
            await self._turn.wait()
        self._sending = True
        await self._send_and_pass(data)

    async def _send_and_pass(self, data: bytes) -> None:
        """Send ``data`` while holding the turn, then pass the turn on."""
        try:
            if data:
                await send_all(self._stream, data)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            self.closed = True
        finally:
            self._sending = False
            turn, self._turn = self._turn, None
            if turn is not None:
                turn.set()
