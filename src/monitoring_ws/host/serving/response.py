"""The ASGI ``send`` of the lean listener's HTTP answers: heads written here, checked as
h11 would check them, without h11's per-answer events (docs/performance.md)."""

from __future__ import annotations

import email.utils
import functools
import json
import re
import time
from http import HTTPStatus
from typing import Any

import trio

from ...web import error_body
from .rawio import send_all

__all__ = ["HttpResponse", "http_date", "reason_phrase"]

# h11's rules for what an answer's head may hold (RFC 9110 section 5).
_NAME = re.compile(rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+").fullmatch
_VALUE = re.compile(rb"(?:[^\x00\s]+(?:[ \t]+[^\x00\s]+)*)?").fullmatch
#: The listener frames the answer and says whether the connection stays: the app's own
#: word on these is dropped.
_OURS = frozenset({b"connection", b"transfer-encoding", b"date"})
#: The 500's body when the app ended without answering.
_NO_ANSWER = json.dumps(error_body("internal", "the server gave no answer")).encode()


class HttpResponse:
    """The app's ``send``: a whole answer goes out in one write with its length; a
    streamed one (``more_body``) as it comes, with the app's ``Content-Length`` or in
    chunks. Headers that h11 would refuse raise ``ValueError`` before anything is sent."""

    __slots__ = (
        "_chunked",
        "_head",
        "_left",
        "_sends_body",
        "_stream",
        "close",
        "done",
        "started",
    )

    def __init__(self, stream: trio.abc.Stream, *, close: bool, head_request: bool) -> None:
        self._stream = stream
        #: The connection ends after this answer (the client or the listener said so, or
        #: the answer's length was not kept).
        self.close = close
        self._head: tuple[int, list[tuple[bytes, bytes]]] | None = None
        self._sends_body = not head_request  # HEAD: the length is told, no body is sent
        self._chunked = False
        self._left: int | None = None  # body bytes still owed to a Content-Length
        self.started = False  # the head is on the wire
        self.done = False

    def _start(self, whole: int | None) -> bytes:
        """The head; ``whole`` is the body's length when it comes in one message."""
        assert self._head is not None  # noqa: S101 - after http.response.start
        status, headers = self._head
        lines = [b"HTTP/1.1 %d %b\r\n" % (status, reason_phrase(status))]
        declared: int | None = None
        for raw_name, raw_value in headers:
            name, value = bytes(raw_name), bytes(raw_value)
            if not _NAME(name) or not _VALUE(value):
                raise ValueError(f"the app answered with a header h11 refuses: {name[:64]!r}")
            lowered = name.lower()
            if lowered in _OURS:
                continue
            if lowered == b"content-length":
                if declared is not None or not value.isdigit():
                    raise ValueError(f"the app answered with Content-Length {value[:32]!r}")
                declared = int(value)
            lines.append(b"%b: %b\r\n" % (name, value))
        if status < 200 or status in (204, 304):  # no body, whatever the app says
            self._sends_body = False
        elif declared is not None:
            self._left = declared
        elif whole is not None:
            lines.append(b"content-length: %d\r\n" % whole)
            self._left = whole
        elif self.close:  # streamed, and the connection ends with it: the end is the end
            pass
        else:
            lines.append(b"transfer-encoding: chunked\r\n")
            self._chunked = True
        lines.append(b"date: %b\r\n" % http_date())
        if self.close:
            lines.append(b"connection: close\r\n")
        lines.append(b"\r\n")
        return b"".join(lines)

    async def __call__(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        if kind == "http.response.start":
            self._head = (message["status"], list(message.get("headers", [])))
            return
        if kind != "http.response.body" or self.done or self._head is None:
            return
        body: bytes = message.get("body", b"")
        more: bool = message.get("more_body", False)
        data = b""
        head_sent = self.started
        if not head_sent:
            data = self._start(None if more else len(body))
            self.started = True
        if self._sends_body:
            if self._chunked:
                if body:
                    data += b"%x\r\n%b\r\n" % (len(body), body)
                if not more:
                    data += b"0\r\n\r\n"
            elif body:
                data += body
                if self._left is not None:
                    self._left -= len(body)
        if self._left is not None and self._left < 0:
            self.started = head_sent  # nothing of this went out: ``fail`` may still answer
            raise ValueError("the app sent more body than its Content-Length")
        if not more:
            self.done = True
            if self._sends_body and self._left:
                self.close = True  # shorter than it said: the client sees it end
        if data:
            await send_all(self._stream, data)

    async def fail(self) -> None:
        """The app ended without a whole answer: a 500 if nothing was sent; else the
        connection ends (the client sees a truncated answer)."""
        self.close = True
        if not self.started:
            self._head = (500, [(b"content-type", b"application/json")])
            await self({"type": "http.response.body", "body": _NO_ANSWER})


_date: tuple[int, bytes] = (0, b"")


def http_date() -> bytes:
    """Now, as an HTTP ``Date`` (agents over TLS take their clock offset from it)."""
    global _date  # noqa: PLW0603 - one value a second, shared by every answer
    second = int(time.time())
    if _date[0] != second:
        _date = (second, email.utils.formatdate(second, usegmt=True).encode("ascii"))
    return _date[1]


@functools.lru_cache(maxsize=64)
def reason_phrase(status: int) -> bytes:
    """The status's standard reason phrase (empty for one the standard library lacks)."""
    try:
        return HTTPStatus(status).phrase.encode("ascii")
    except ValueError:
        return b""
