"""The common HTTP/1.1 request head, read without h11 (sans-IO).

An API client's request is nearly always the same plain shape: an origin-form target,
HTTP/1.1, one Host, printable ASCII headers, a ``Content-Length`` or no body. Building
h11's connection and events for it cost about a tenth of a command's round trip
(docs/performance.md). ``plain_request`` reads that shape and nothing else: it accepts a
strict subset of what h11 accepts and returns None for everything outside it (chunked
bodies, ``Expect``, upgrades, obs-text, repeated or odd ``Content-Length``, bare line
ends, HTTP/1.0), which h11 then reads or refuses as before. tests/test_request_head.py
holds it to h11's reading of the same bytes.
"""

from __future__ import annotations

import re

import attrs

__all__ = ["RequestHead", "plain_request"]

_TOKEN = rb"[-!#$%&'*+.^_`|~0-9A-Za-z]+"
_REQUEST_LINE = re.compile(rb"(" + _TOKEN + rb") (/[\x21-\x7e]*) HTTP/1\.1")
_FIELD = re.compile(rb"(" + _TOKEN + rb"):(.*)", re.DOTALL)
# h11's field value without obs-text, once its surrounding blanks are stripped: visible
# ASCII and blanks. (Not h11's own pattern, whose two runs of optional blanks backtrack
# quadratically on a long blank run: h11guard.py.)
_VALUE = re.compile(rb"[\x21-\x7e \t]*")
#: Headers that change how the message is framed or answered: h11 reads those requests.
_FOR_H11 = frozenset({b"transfer-encoding", b"expect", b"upgrade"})
#: h11 allows 20 digits; a body that large is refused long before it matters.
_MOST_LENGTH_DIGITS = 18


@attrs.frozen
class RequestHead:
    """What the listener needs of a request head (read here or by h11)."""

    method: bytes
    target: bytes
    #: In order, names lower-case, values without surrounding whitespace.
    headers: list[tuple[bytes, bytes]]
    #: The client lets the connection stay open after the answer.
    keep_alive: bool
    http_version: bytes = b"1.1"


def plain_request(data: bytes) -> tuple[RequestHead, int, int] | None:
    """The head that begins ``data``, its body's length (0 without ``Content-Length``)
    and where the head ends (after its blank line), if it is of the plain shape; else
    None (h11 decides: it may still be valid, or it is a 400)."""
    end = data.find(b"\r\n\r\n")
    if end < 0:
        return None
    lines = data[:end].split(b"\r\n")
    request_line = _REQUEST_LINE.fullmatch(lines[0])
    if request_line is None:
        return None
    headers: list[tuple[bytes, bytes]] = []
    hosts, length, keep_alive = 0, -1, True
    for line in lines[1:]:
        field = _FIELD.fullmatch(line)
        if field is None:
            return None
        name, value = field[1].lower(), field[2].strip(b" \t")
        if not _VALUE.fullmatch(value):
            return None
        if name in _FOR_H11:
            return None
        if name == b"host":
            hosts += 1
        elif name == b"content-length":
            if length >= 0 or not value.isdigit() or len(value) > _MOST_LENGTH_DIGITS:
                return None  # repeated, a list, or not a plain number: h11's call
            length = int(value)
        elif name == b"connection" and b"close" in value.lower():
            keep_alive = False
        headers.append((name, value))
    if hosts != 1:
        return None  # h11 refuses none or several (RFC 9112 section 3.2)
    head = RequestHead(request_line[1], request_line[2], headers, keep_alive)
    return head, max(length, 0), end + 4
