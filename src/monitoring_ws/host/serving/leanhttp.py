"""Plain HTTP on the lean listener: a request read (its plain shape here, the rest by
h11), handed to the ASGI app, answered through ``HttpResponse``; on ``listen`` connections
are kept alive, on ``agent_listen`` one request each (agents' ``/enroll``)."""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import unquote

import h11
import trio
from werkzeug.exceptions import RequestEntityTooLarge, RequestTimeout

from ...web import error_body, http_error_body
from .rawio import receive_some
from .requesthead import RequestHead, plain_request
from .response import HttpResponse, reason_phrase

if TYPE_CHECKING:
    from .leansocket import LeanSettings

__all__ = ["BAD_REQUEST", "HEAD_TOO_LARGE", "WHOLE_BODY", "decoded_path", "serve_http"]

log = logging.getLogger("monitoring_ws.lean")

#: A scope extension: the request's whole body, already read within the listener's size
#: and time bounds (a route may take it without a deadline of its own; ``receive`` still
#: gives it too).
WHOLE_BODY = "monitoring_ws.whole_body"


def _json(body: dict[str, Any]) -> bytes:
    return json.dumps(body).encode()


def _close_answer(status: int, body: bytes) -> bytes:
    """A whole JSON answer after which the connection ends."""
    return (
        b"HTTP/1.1 %d %b\r\ncontent-type: application/json\r\n"
        b"content-length: %d\r\nconnection: close\r\n\r\n%b"
    ) % (status, reason_phrase(status), len(body), body)


#: What a request that cannot be read at all gets.
BAD_REQUEST = _close_answer(
    400, _json(error_body("bad_request", "the request cannot be read as HTTP/1.1"))
)
#: What a request head over the listener's limits gets.
HEAD_TOO_LARGE = _close_answer(
    431,
    _json(
        error_body(
            "header_too_large",
            "the request head is over the listener's limits (its size or its number of headers)",
        )
    ),
)
_MALFORMED_BODY = _close_answer(400, _json(error_body("bad_request", "a malformed body")))
#: The API's own answers (the app's, word for word), for bodies the listener refuses first.
_APP_413 = _close_answer(413, _json(http_error_body(RequestEntityTooLarge())))
_APP_408 = _close_answer(408, _json(http_error_body(RequestTimeout())))
_CONTINUE = b"HTTP/1.1 100 Continue\r\n\r\n"

#: A request, its body, and the bytes read past it (the next request's beginning).
_Read = tuple[RequestHead, bytes, bytes]


async def _read_request(
    stream: trio.abc.Stream, data: bytes, client: tuple[str, int], settings: LeanSettings
) -> _Read | None:
    """The request whose head begins ``data``; None once an error was answered (400, 408,
    413). The plain shape is read here, the rest by h11."""
    plain = plain_request(data)
    if plain is None:
        return await _read_with_h11(stream, data, client, settings)
    head, length, head_end = plain
    if length > settings.max_body_bytes:
        await stream.send_all(_APP_413)
        return None
    needed = head_end + length
    if len(data) < needed:  # the body is still coming
        buffer = bytearray(data)
        with trio.move_on_after(settings.body_timeout_s):
            while len(buffer) < needed:
                chunk = await receive_some(stream, 64 * 1024)
                if not chunk:  # the client left mid-body
                    await stream.send_all(_MALFORMED_BODY)
                    return None
                buffer += chunk
        if len(buffer) < needed:
            await stream.send_all(_APP_408)
            return None
        data = bytes(buffer)
    return head, data[head_end:needed], data[needed:]


async def _read_with_h11(
    stream: trio.abc.Stream, data: bytes, client: tuple[str, int], settings: LeanSettings
) -> _Read | None:
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(data) + 1)
    conn.receive_data(data)
    try:
        request = conn.next_event()
    except h11.RemoteProtocolError as exc:
        log.info("a bad request from %s:%d: 400 (%s)", *client, str(exc)[:120])
        await stream.send_all(BAD_REQUEST)
        return None
    if not isinstance(request, h11.Request):
        return None
    if conn.they_are_waiting_for_100_continue:
        await stream.send_all(_CONTINUE)
    body = await _read_body(stream, conn, settings)
    if body is None:
        return None
    headers = [(name.lower(), value) for name, value in request.headers]
    head = RequestHead(
        request.method, request.target, headers, _keeps_alive(request), request.http_version
    )
    return head, body, bytes(conn.trailing_data[0])


async def _read_body(
    stream: trio.abc.Stream, conn: h11.Connection, settings: LeanSettings
) -> bytes | None:
    """The request's body as h11 frames it; None once an error was answered (413, 408,
    400)."""
    body = bytearray()
    with trio.move_on_after(settings.body_timeout_s) as timed:
        while True:
            try:
                event = conn.next_event()
            except h11.RemoteProtocolError:  # a malformed body (chunked encoding)
                await stream.send_all(_MALFORMED_BODY)
                return None
            if event is h11.NEED_DATA:
                chunk = await stream.receive_some(64 * 1024)
                conn.receive_data(bytes(chunk))  # b"" is the end of the stream
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > settings.max_body_bytes:
                    await stream.send_all(_APP_413)
                    return None
                continue
            break
    if timed.cancelled_caught or not isinstance(event, h11.EndOfMessage):
        await stream.send_all(_APP_408)
        return None
    return bytes(body)


def decoded_path(raw_path: bytes) -> str:
    """The ASGI ``path``: percent-escapes decoded, as UTF-8 (the target is ASCII)."""
    return unquote(raw_path.decode("ascii"))


def _scope(head: RequestHead, body: bytes, client: tuple[str, int], *, tls: bool) -> dict[str, Any]:
    raw_path, _, query = head.target.partition(b"?")
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": head.http_version.decode("ascii"),
        "method": head.method.decode("ascii"),
        "scheme": "https" if tls else "http",
        "path": decoded_path(raw_path),
        "raw_path": raw_path,
        "query_string": query,
        "root_path": "",
        "headers": head.headers,
        "client": client,
        "server": None,
        "extensions": {WHOLE_BODY: body},
    }


async def serve_http(
    app: Callable[..., Any],
    stream: trio.abc.Stream,
    data: bytes,
    client: tuple[str, int],
    settings: LeanSettings,
    *,
    tls: bool,
    keep_alive: bool = False,
) -> bytes | None:
    """Read one request (its body bounded in size and time), run ``app``, answer. With
    ``keep_alive`` (and a client that keeps it), the bytes read past the request, which
    begin the next one; otherwise None: the connection ends."""
    read = await _read_request(stream, data, client, settings)
    if read is None:
        return None
    head, body, leftover = read
    scope = _scope(head, body, client, tls=tls)
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

    close = not keep_alive or not head.keep_alive
    send = HttpResponse(stream, close=close, head_request=head.method == b"HEAD")
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
    if send.close:
        return None
    return leftover + bytes(early)


def _keeps_alive(request: h11.Request) -> bool:
    """HTTP/1.1 keeps the connection unless the client says close; 1.0 is answered and
    closed, as h11 would (this listener sends no ``Connection: keep-alive``)."""
    said = b",".join(v.lower() for k, v in request.headers if k == b"connection")
    return request.http_version == b"1.1" and b"close" not in said
