"""Plain HTTP on the lean agent listener: one request per connection through h11, handed
to the same ASGI app (agents' routes such as ``/enroll``, and the 404 for the rest)."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import h11
import trio

if TYPE_CHECKING:
    from .leansocket import LeanSettings

__all__ = ["BAD_REQUEST", "HEAD_TOO_LARGE", "serve_http"]

log = logging.getLogger("monitoring_ws.lean")

#: What a request that cannot be read at all gets.
BAD_REQUEST = b"HTTP/1.1 400 Bad Request\r\ncontent-length: 0\r\nconnection: close\r\n\r\n"
#: What a request head over the listener's limits gets.
HEAD_TOO_LARGE = (
    b"HTTP/1.1 431 Request Header Fields Too Large\r\ncontent-length: 0\r\n"
    b"connection: close\r\n\r\n"
)


def _error(status: int, code: str, message: str) -> tuple[int, bytes]:
    return status, json.dumps({"error": {"code": code, "message": message}}).encode()


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
                await _answer(stream, conn, *_error(400, "bad_request", "a malformed body"))
                return None
            if event is h11.NEED_DATA:
                chunk = await stream.receive_some(64 * 1024)
                conn.receive_data(bytes(chunk))  # b"" is the end of the stream
                continue
            if isinstance(event, h11.Data):
                body += event.data
                if len(body) > settings.max_body_bytes:
                    await _answer(stream, conn, *_error(413, "too_large", "the body is too large"))
                    return None
                continue
            break
    if timed.cancelled_caught or not isinstance(event, h11.EndOfMessage):
        await _answer(stream, conn, *_error(408, "request_timeout", "the body came too slowly"))
        return None
    return bytes(body)


async def serve_http(
    app: Callable[..., Any],
    stream: trio.abc.Stream,
    head: bytes,
    client: tuple[str, int],
    settings: LeanSettings,
    *,
    tls: bool,
) -> None:
    """Read one request (its body bounded in size and time), run ``app``, answer, close."""
    conn = h11.Connection(h11.SERVER, max_incomplete_event_size=len(head) + 1)
    conn.receive_data(head)
    try:
        request = conn.next_event()
    except h11.RemoteProtocolError as exc:
        log.info("a bad request from %s:%d: 400 (%s)", *client, str(exc)[:120])
        await stream.send_all(BAD_REQUEST)
        return
    if not isinstance(request, h11.Request):
        return
    body = await _read_body(stream, conn, settings)
    if body is None:
        return
    target = request.target.decode("latin-1")
    path, _, query = target.partition("?")
    scope = {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": "1.1",
        "method": request.method.decode("ascii"),
        "scheme": "https" if tls else "http",
        "path": path,
        "raw_path": path.encode("latin-1"),
        "query_string": query.encode("latin-1"),
        "root_path": "",
        "headers": [(name.lower(), value) for name, value in request.headers],
        "client": client,
        "server": None,
    }
    received = False

    async def receive() -> dict[str, Any]:
        nonlocal received
        if received:
            await trio.sleep_forever()  # a disconnect would come here; one request only
        received = True
        return {"type": "http.request", "body": body, "more_body": False}

    out = bytearray()
    status = 500
    headers: list[tuple[bytes, bytes]] = []
    streaming = False

    async def send(message: dict[str, Any]) -> None:
        # A response that says its length (a release artifact) goes out as it comes, so
        # a download holds one chunk here, not the whole file; others are collected.
        nonlocal status, headers, streaming
        if message["type"] == "http.response.start":
            status, headers = message["status"], list(message.get("headers", []))
            if any(name.lower() == b"content-length" for name, _ in headers):
                streaming = True
                kept = [(k, v) for k, v in headers if k.lower() != b"connection"]
                head = h11.Response(status_code=status, headers=[*kept, (b"connection", b"close")])
                await stream.send_all(conn.send(head))
        elif message["type"] == "http.response.body" and streaming:
            if message.get("body"):
                await stream.send_all(conn.send(h11.Data(data=message["body"])))
            if not message.get("more_body", False):
                await stream.send_all(conn.send(h11.EndOfMessage()))
        elif message["type"] == "http.response.body":
            out.extend(message.get("body", b""))

    await app(scope, receive, send)
    if streaming:
        return
    kept = [(k, v) for k, v in headers if k.lower() not in {b"content-length", b"connection"}]
    kept += [(b"content-length", str(len(out)).encode()), (b"connection", b"close")]
    data = conn.send(h11.Response(status_code=status, headers=kept))
    data += conn.send(h11.Data(data=bytes(out))) + conn.send(h11.EndOfMessage())
    await stream.send_all(data)
