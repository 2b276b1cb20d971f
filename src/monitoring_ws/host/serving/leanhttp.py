"""Plain HTTP on the lean agent listener: one request per connection through h11, handed
to the same ASGI app (agents' routes such as ``/enroll``, and the 404 for the rest)."""

from __future__ import annotations

import contextlib
import email.utils
import functools
import json
import logging
import time
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11
import trio
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from ...web import error_body, http_error_body

if TYPE_CHECKING:
    from .leansocket import LeanSettings

__all__ = ["BAD_REQUEST", "HEAD_TOO_LARGE", "decoded_path", "http_date", "serve_http"]

log = logging.getLogger("monitoring_ws.lean")


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _refusal(status: str, code: str, message: str) -> bytes:
    body = _json(error_body(code, message))
    return (
        f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nconnection: close\r\n\r\n"
    ).encode() + body


#: What a request that cannot be read at all gets.
BAD_REQUEST = _refusal("400 Bad Request", "bad_request", "the request cannot be read as HTTP/1.1")
#: What a request head over the listener's limits gets.
HEAD_TOO_LARGE = _refusal(
    "431 Request Header Fields Too Large",
    "header_too_large",
    "the request head is over the listener's limits (its size or its number of headers)",
)


#: The API's own answers (the app's, word for word), for bodies the listener refuses first.
_APP_413 = _json(http_error_body(RequestEntityTooLarge()))
_APP_408 = _json(http_error_body(RequestTimeout()))


async def _answer(stream: trio.abc.Stream, conn: h11.Connection, status: int, body: bytes) -> None:
    headers = [("content-type", "application/json"), ("content-length", str(len(body)))]
    headers.append(("connection", "close"))
    data = conn.send(h11.Response(status_code=status, headers=headers))
    data += conn.send(h11.Data(data=body)) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)


async def _read_body(
    stream: trio.abc.Stream, conn: h11.Connection, settings: LeanSettings
) -> bytes | None:
    """The request's body; None once an error was answered (413, 408, 400)."""
    body = bytearray()
    with trio.move_on_after(settings.body_timeout_s) as timed:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:  # a malformed body (chunked encoding)
                malformed = _json(error_body("bad_request", "a malformed body"))
                await _answer(stream, conn, 400, malformed)
                return None
            if event is h11.NEED_DATA:
                chunk = await stream.receive_some(64 * 1024)
                conn.receive_data(bytes(chunk))  # b"" is the end of the stream
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > settings.max_body_bytes:
                    await _answer(stream, conn, 413, _APP_413)
                    return None
                continue
            break
    if timed.cancelled_caught or not isinstance(event, h11.EndOfMessage):
        await _answer(stream, conn, 408, _APP_408)
        return None
    return bytes(body)


def decoded_path(raw_path: bytes) -> str:
    """The ASGI ``path``: percent-escapes decoded, as UTF-8 (h11 has checked the target
    is ASCII)."""
    return unquote(raw_path.decode("ascii"))


def _scope(request: h11.Request, client: tuple[str, int], *, tls: bool) -> dict[str, Any]:
    raw_path, _, query = request.target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": request.http_version.decode("ascii"),
        "method": request.method.decode("ascii"),
        "scheme": "https" if tls else "http",
        "path": decoded_path(raw_path),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers],
        "client": client,
        "server": None,
    }


class _Response:
    """The app's ``send``: a whole answer goes out in one write with its length; a
    streamed one (``more_body``) as it comes, framed by h11 (its length, or chunks)."""

    __slots__ = ("_conn", "_head", "_headless", "_stream", "close", "done", "started")

    def __init__(
        self, stream: trio.abc.Stream, conn: h11.Connection, *, close: bool, headless: bool
    ) -> None:
        self._stream, self._conn = stream, conn
        #: The connection ends after this answer (the client or the listener said so).
        self.close = close
        self._headless = headless  # HEAD: the length is told, no body is sent
        self._head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self.started = False  # the head is on the wire
        self.done = False

    def _response(self, length: int | None) -> h11.Response:
        assert self._head is not None  # noqa: S101 - after http.response.start
        status, headers = self._head
        kept = [(k, v) for k, v in headers if k.lower() != b"connection"]
        if length is not None and not any(k.lower() == b"content-length" for k, _ in kept):
            kept.append((b"content-length", str(length).encode()))
        kept.append((b"date", http_date()))
        if self.close:
            kept.append((b"connection", b"close"))
        return h11.Response(status_code=status, headers=kept, reason=_reason(status))

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._head = (message["status"], list(message.get("headers", [])))
            return
        if kind != "http.response.body" or self.done or self._head is None:
            return
        body, more = message.get("body", b""), message.get("more_body", False)
        conn, data = self._conn, b""
        if not self.started:
            self.started = True
            data = conn.send(self._response(None if more else len(body)))
        if body and not self._headless:
            data += conn.send(h11.Data(data=body))
        if not more:
            self.done = True
            data += conn.send(h11.EndOfMessage())
        if data:
            await self._stream.send_all(data)

    async def fail(self) -> None:
        """The app ended without a whole answer: a 500 if nothing was sent; else the
        connection ends (the client sees a truncated answer)."""
        self.close = True
        if not self.started:
            self._head = (500, [(b"content-type", b"application/json")])
            body = _json(error_body("internal", "the server gave no answer"))
            await self({"type": "http.response.body", "body": body})


async def serve_http(
    app: Callable[..., Any],
    stream: trio.abc.Stream,
    head: bytes,
    client: tuple[str, int],
    settings: LeanSettings,
    *,
    tls: bool,
    keep_alive: bool = False,
) -> bytes | None:
    """Read one request (its body bounded in size and time), run ``app``, answer. With
    ``keep_alive`` (and a client that keeps it), the bytes read past the request, which
    begin the next one; otherwise None: the connection ends."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    try:
        request = conn.next_event()
    except h11.RemoteProtocolError as exc:
        log.info("a bad request from %s:%d: 400 (%s)", *client, str(exc)[:120])
        await stream.send_all(BAD_REQUEST)
        return None
    if not isinstance(request, h11.Request):
        return None
    if conn.they_are_waiting_for_100_continue:
        await stream.send_all(conn.send(h11.InformationalResponse(status_code=100, headers=[])))
    body = await _read_body(stream, conn, settings)
    if body is None:
        return None
    scope = _scope(request, client, tls=tls)
    received = False
    early = bytearray()  # what a kept-alive client sent while this request was answered

    async def receive() -> dict[str, Any]:
        nonlocal received
        if not received:
            received = True
            return {"type": "http.request", "body": body, "more_body": False}
        # The request is whole: an app that asks again waits for its client to leave
        # (a stream follows until then). Over TLS a write that fails tells it instead (an
        # SSLStream read that is cancelled may break the stream).
        if isinstance(stream, trio.SocketStream):
            while len(early) <= settings.max_body_bytes:
                chunk = await stream.receive_some(64 * 1024)
                if not chunk:
                    return {"type": "http.disconnect"}
                early.extend(chunk)  # the next request, pipelined: kept for it
        await trio.sleep_forever()
        raise AssertionError  # not reached

    close = not keep_alive or conn.their_state is not h11.DONE or not _keeps_alive(request)
    send = _Response(stream, conn, close=close, headless=request.method == b"HEAD")
    try:
        await app(scope, receive, send)
    finally:
        if not send.done:
            with (
                trio.CancelScope(shield=True),
                trio.move_on_after(1),
                contextlib.suppress(trio.BrokenResourceError, trio.ClosedResourceError, OSError),
            ):
                await send.fail()
    if send.close or conn.our_state is not h11.DONE:
        return None
    leftover, _ = conn.trailing_data
    return bytes(leftover) + bytes(early)


_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """Now, as an HTTP ``Date`` (agents over TLS take their clock offset from it)."""
    global _date  # noqa: PLW0603 - one value a second, shared by every answer
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, usegmt=True).encode("ascii"))
    return _date[1]


@functools.lru_cache(maxsize=64)
def _reason(status: int) -> bytes:
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:  # a status the standard library does not name
        return b""


def _keeps_alive(request: h11.Request) -> bool:
    """HTTP/1.1 keeps the connection unless the client says close; 1.0 closes it."""
    said = b",".join(v.lower() for k, v in request.headers if k == b"connection")
    if request.http_version == b"1.0":
        return b"keep-alive" in said
    return b"close" not in said
