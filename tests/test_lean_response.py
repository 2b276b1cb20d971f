"""The lean listener's answers, read back by h11 as a client would read them."""

from __future__ import annotations

from typing import Any

import h11
import pytest
import trio
import trio.testing

from monitoring_ws.host.serving.response import HttpResponse


async def answer(
    messages: list[dict[str, Any]], *, method: bytes = b"GET", close: bool = False
) -> tuple[HttpResponse, list[h11.Event], bytes]:
    """Send ``messages`` through an ``HttpResponse``; what a client's h11 reads of it."""
    ours, theirs = trio.testing.memory_stream_pair()
    send = HttpResponse(ours, close=close, head_request=method == b"HEAD")
    for message in messages:
        await send(message)
    await ours.aclose()
    wire = b""
    while chunk := await theirs.receive_some():
        wire += chunk
    client = h11.Connection(h11.CLIENT)
    client.send(h11.Request(method=method, target="/", headers=[("host", "a")]))
    client.send(h11.EndOfMessage())
    client.receive_data(wire)
    client.receive_data(b"")
    events: list[h11.Event] = []
    while not isinstance(event := client.next_event(), h11.EndOfMessage):
        assert event is not h11.NEED_DATA, wire
        events.append(event)
    return send, events, wire


def start(status: int = 200, *headers: tuple[bytes, bytes]) -> dict[str, Any]:
    return {"type": "http.response.start", "status": status, "headers": list(headers)}


def body(data: bytes, *, more: bool = False) -> dict[str, Any]:
    return {"type": "http.response.body", "body": data, "more_body": more}


def header(event: h11.Event, name: bytes) -> list[bytes]:
    assert isinstance(event, h11.Response)
    return [value for key, value in event.headers if key == name]


async def test_a_whole_answer_has_its_length_a_date_and_one_write() -> None:
    send, events, wire = await answer([start(201, (b"content-type", b"a/b")), body(b"hey")])
    response, data = events
    assert isinstance(response, h11.Response)
    assert response.status_code == 201
    assert response.reason == b"Created"
    assert header(response, b"content-length") == [b"3"]
    assert len(header(response, b"date")) == 1
    assert isinstance(data, h11.Data)
    assert data.data == b"hey"
    assert send.done
    assert not send.close
    assert wire.endswith(b"\r\n\r\nhey")


async def test_a_streamed_answer_is_chunked_and_ends() -> None:
    send, events, _ = await answer([start(), body(b"a", more=True), body(b""), body(b"")])
    response, *chunks = events
    assert header(response, b"transfer-encoding") == [b"chunked"]
    assert b"".join(bytes(c.data) for c in chunks if isinstance(c, h11.Data)) == b"a"
    assert send.done


async def test_a_streamed_answer_with_its_length_is_sent_as_it_is() -> None:
    messages = [start(200, (b"Content-Length", b"4")), body(b"ab", more=True), body(b"cd")]
    send, events, _ = await answer(messages)
    assert header(events[0], b"content-length") == [b"4"]
    assert b"".join(bytes(e.data) for e in events[1:] if isinstance(e, h11.Data)) == b"abcd"
    assert not send.close


async def test_the_app_saying_less_than_its_length_ends_the_connection() -> None:
    ours, _ = trio.testing.memory_stream_pair()
    send = HttpResponse(ours, close=False, head_request=False)
    await send(start(200, (b"content-length", b"9")))
    await send(body(b"short"))
    assert send.done
    assert send.close


async def test_the_app_saying_more_than_its_length_is_refused() -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    send = HttpResponse(ours, close=False, head_request=False)
    await send(start(200, (b"content-length", b"1")))
    with pytest.raises(ValueError, match="more body"):
        await send(body(b"long"))
    assert not send.started  # nothing went out...
    await send.fail()  # ...so the listener's 500 can
    with trio.fail_after(5):  # a hang guard only
        assert (await theirs.receive_some()).startswith(b"HTTP/1.1 500 ")


async def test_head_tells_the_length_and_sends_no_body() -> None:
    _, events, wire = await answer([start(), body(b"12345")], method=b"HEAD")
    assert header(events[0], b"content-length") == [b"5"]
    assert wire.endswith(b"\r\n\r\n")


@pytest.mark.parametrize("status", [204, 304])
async def test_an_answer_without_body_sends_none(status: int) -> None:
    _, events, wire = await answer([start(status), body(b"ignored")])
    assert events[0].status_code == status  # type: ignore[attr-defined]
    assert wire.endswith(b"\r\n\r\n")


async def test_close_is_said_and_the_apps_own_framing_is_replaced() -> None:
    messages = [
        start(200, (b"connection", b"keep-alive"), (b"transfer-encoding", b"gzip")),
        body(b"x", more=True),
        body(b"y"),
    ]
    send, events, wire = await answer(messages, close=True)
    assert header(events[0], b"connection") == [b"close"]
    assert header(events[0], b"transfer-encoding") == []  # the end of the stream ends it
    assert wire.endswith(b"\r\n\r\nxy")
    assert send.close


@pytest.mark.parametrize(
    ("name", "value"),
    [(b"x-a", b"one\r\nset-cookie: injected"), (b"bad name", b"v"), (b"x", b"\x00")],
)
async def test_a_header_h11_would_refuse_is_refused_before_anything_is_sent(
    name: bytes, value: bytes
) -> None:
    ours, theirs = trio.testing.memory_stream_pair()
    send = HttpResponse(ours, close=False, head_request=False)
    await send(start(200, (name, value)))
    with pytest.raises(ValueError, match="header"):
        await send(body(b"x"))
    assert not send.started
    await send.fail()  # what the listener then does: a 500 of its own
    await ours.aclose()
    wire = b""
    while chunk := await theirs.receive_some():
        wire += chunk
    assert wire.startswith(b"HTTP/1.1 500 Internal Server Error\r\n")
    assert b"injected" not in wire
