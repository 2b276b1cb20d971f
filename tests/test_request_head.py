"""The lean listener's own reading of plain request heads against h11's reading of the
same bytes: whatever it reads, h11 reads the same way; the rest it leaves to h11."""

from __future__ import annotations

import h11
from hypothesis import given, settings
from hypothesis import strategies as st

from monitoring_ws.host.serving.requesthead import plain_request


def mostly(good: list[bytes], odd: list[bytes]) -> st.SearchStrategy[bytes]:
    """``good`` seven times in eight: most drawn heads are valid, with an odd part here
    and there."""
    return st.sampled_from(good * 7 + odd)


METHODS = mostly([b"GET", b"POST", b"HEAD", b"DELETE", b"X-Y!"], [b"", b"GE T", b"G\x00"])
TARGETS = mostly(
    [b"/", b"/api/agents/a-1/command", b"/a?b=c&d", b"/%2F"],
    [b"*", b"http://h/x", b"/a b", b"/\x7f", "/\u00e9".encode(), b""],
)
VERSIONS = mostly([b"HTTP/1.1"], [b"HTTP/1.0", b"HTTP/2.0", b"http/1.1", b"HTTP/1.1 "])
NAMES = mostly(
    [b"Connection", b"Authorization", b"X-A", b"Content-Type"],
    [b"Transfer-Encoding", b"Expect", b"Upgrade", b"Bad Name", b"", b"X\x00", b" Host"],
)
VALUES = mostly(
    [b"close", b"Close", b"keep-alive", b"Bearer abc", b"a\tb", b" x ", b""],
    [b"-1", b"chunked", b"\x01", b"a\x00b", b"\t", "\u00e9".encode(), b"upgrade, close"],
)
LENGTH_NAMES = mostly([b"Content-Length", b"content-length"], [b"Content-Length "])
LENGTHS = mostly(
    [b"0", b"5", b"05", b"12", b"13"], [b"5, 5", b"5,6", b"-1", b"", b"1" * 19, b"1" * 21]
)
SEPARATORS = mostly([b":", b": ", b":\t"], [b" :", b"::"])
LINE_ENDS = mostly([b"\r\n"], [b"\n", b"\r"])
HOSTS = mostly([b"localhost", b"127.0.0.1:8080"], [b"", b"a b", b"\x80"])


@st.composite
def heads(draw: st.DrawFn) -> bytes:
    end = draw(LINE_ENDS)
    line = b" ".join([draw(METHODS), draw(TARGETS), draw(VERSIONS)])
    fields = draw(st.lists(st.tuples(NAMES, SEPARATORS, VALUES), max_size=5))
    for _ in range(draw(st.sampled_from([0, 1, 1, 1, 2]))):  # a Content-Length, mostly
        where = draw(st.integers(0, len(fields)))
        fields.insert(where, (draw(LENGTH_NAMES), draw(SEPARATORS), draw(LENGTHS)))
    for _ in range(draw(st.sampled_from([1, 1, 1, 1, 0, 2]))):  # one Host, mostly
        where = draw(st.integers(0, len(fields)))
        fields.insert(where, (b"Host", draw(SEPARATORS), draw(HOSTS)))
    lines = [line] + [name + sep + value for name, sep, value in fields]
    if draw(st.sampled_from([False] * 15 + [True])):
        lines.insert(draw(st.integers(1, len(lines))), b" folded")  # obs-fold
    body = draw(st.binary(max_size=20))
    return end.join(lines) + end + end + body


def h11_reading(data: bytes) -> tuple[h11.Request, bytes, bytes] | None:
    """h11's request, body and what follows it; None if it refuses or wants more."""
    conn = h11.Connection(h11.SERVER)
    conn.receive_data(data)
    conn.receive_data(b"")  # all there is
    try:
        request = conn.next_event()
        if not isinstance(request, h11.Request):
            return None
        body = b""
        while isinstance(event := conn.next_event(), h11.Data):
            body += event.data
    except h11.RemoteProtocolError:
        return None
    if not isinstance(event, h11.EndOfMessage):
        return None
    return request, body, bytes(conn.trailing_data[0])


@settings(max_examples=3000, deadline=None)
@given(heads())
def test_what_the_plain_reader_reads_h11_reads_alike(data: bytes) -> None:
    plain = plain_request(data)
    if plain is None:
        return  # h11 reads it (or refuses it) as before
    head, length, head_end = plain
    ours_body = data[head_end : head_end + length]
    theirs = h11_reading(data)
    if len(data) < head_end + length:  # the body is still coming: h11 waits for it too
        assert theirs is None
        return
    assert theirs is not None, data
    request, body, after = theirs
    assert head.method == request.method
    assert head.target == request.target
    assert request.http_version == b"1.1" == head.http_version
    assert head.headers == [(name, value) for name, value in request.headers]
    assert ours_body == body
    assert data[head_end + length :] == after
    said = b",".join(v.lower() for k, v in request.headers if k == b"connection")
    assert head.keep_alive == (b"close" not in said)


def test_an_api_clients_request_is_of_the_plain_shape() -> None:
    data = (
        b"POST /api/websocket/agents/web-1/command HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
        b"Authorization: Bearer t0k3n\r\nContent-Type: application/json\r\n"
        b"Content-Length: 31\r\n\r\n"
        b'{"command": "ping", "args": {}}GET / HTTP/1.1\r\n'
    )
    plain = plain_request(data)
    assert plain is not None
    head, length, head_end = plain
    assert (head.method, head.target, length, head.keep_alive) == (
        b"POST",
        b"/api/websocket/agents/web-1/command",
        31,
        True,
    )
    assert data[head_end + length :] == b"GET / HTTP/1.1\r\n"  # the next request's start
    assert (b"authorization", b"Bearer t0k3n") in head.headers


def test_what_h11_must_decide_is_left_to_it() -> None:
    base = b"POST / HTTP/1.1\r\nHost: a\r\n"
    for extra in (
        b"Transfer-Encoding: chunked\r\n",
        b"Expect: 100-continue\r\n",
        b"Content-Length: 1\r\nContent-Length: 1\r\n",
        b"Host: b\r\n",
        b"X: caf\xc3\xa9\r\n",
        b"X: a\r\n b\r\n",
    ):
        assert plain_request(base + extra + b"\r\n") is None, extra
    assert plain_request(b"GET / HTTP/1.0\r\nHost: a\r\n\r\n") is None
    assert plain_request(b"GET / HTTP/1.1\r\n\r\n") is None  # no Host: h11's 400
