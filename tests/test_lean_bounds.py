"""The lean listener's bounds in bytes and sockets (step 12): pongs do not queue while a
send is blocked, a first frame is read only up to the first-frame limit, sockets are
counted from accept, and malformed or oversized heads get their answer, not a traceback."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import pytest
import trio
import trio.testing
from wsproto import ConnectionType, WSConnection
from wsproto.events import AcceptConnection, Ping, Request, TextMessage
from wsproto.handshake import H11Handshake

from monitoring_ws.host.serving.lean import LeanSettings, serve_lean
from monitoring_ws.host.serving.leansocket import LeanSocket, _text_frame

SETTINGS = LeanSettings(
    max_message_bytes=1 << 20,
    max_first_message_bytes=16 << 10,
    handshake_timeout_s=60,  # a socket that is not refused at once would hang the test
    body_timeout_s=2,
    max_body_bytes=1024,
    max_unanswered_per_address=3,
)


class _StuckPeer(trio.abc.Stream):
    """A peer that sends ``frames`` and, once the upgrade is answered, reads nothing: the
    server's sends block for ever."""

    def __init__(self, frames: list[bytes]) -> None:
        self.frames = frames
        self.reads = 0
        self.upgraded = False
        self.answer = b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        if self.upgraded:
            await trio.sleep_forever()
        self.upgraded, self.answer = True, bytes(data)

    async def wait_send_all_might_not_block(self) -> None:
        return None

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        self.reads += 1
        if not self.frames:
            await trio.sleep_forever()
        return self.frames.pop(0)

    async def aclose(self) -> None:
        return None


def _handshake() -> tuple[WSConnection, H11Handshake]:
    """A client's upgrade request, read by the server's side of the handshake."""
    client = WSConnection(ConnectionType.CLIENT)
    handshake = H11Handshake(ConnectionType.SERVER)
    handshake.receive_data(client.send(Request(host="127.0.0.1", target="/agent")))
    assert any(isinstance(event, Request) for event in handshake.events())
    return client, handshake


async def _upgraded(peer: _StuckPeer, settings: LeanSettings = SETTINGS) -> tuple[LeanSocket, Any]:
    client, handshake = _handshake()
    socket = LeanSocket(peer, handshake, settings)
    assert (await socket.receive())["type"] == "websocket.connect"
    await socket.send({"type": "websocket.accept"})
    client.receive_data(peer.answer)
    return socket, client


async def test_pings_from_a_peer_that_reads_nothing_are_not_queued() -> None:
    peer = _StuckPeer([])
    socket, client = await _upgraded(peer)
    peer.frames = [client.send(Ping(b"p" * 100)) for _ in range(2_000)]
    async with trio.open_nursery() as nursery:
        nursery.start_soon(socket.receive)
        await trio.testing.wait_all_tasks_blocked()
        # The first pong cannot leave: the reader waits for it instead of reading on.
        assert peer.reads <= 2
        assert len(peer.frames) >= 1_998
        nursery.cancel_scope.cancel()


async def test_a_first_frame_is_buffered_only_up_to_the_first_frame_limit() -> None:
    peer = _StuckPeer([])
    socket, _ = await _upgraded(peer)
    # A text frame announcing 1 MiB, masked, then 200 KiB of it: never finished.
    header = bytes([0x81, 0xFF]) + (1 << 20).to_bytes(8, "big") + b"\0\0\0\0"
    peer.frames = [header] + [b"a" * 4096] * 50
    async with trio.open_nursery() as nursery:
        nursery.start_soon(socket.receive)
        await trio.testing.wait_all_tasks_blocked()
        assert not peer.frames  # all of it read...
        held = sum(len(part) for part in socket._part)
        assert held <= SETTINGS.max_first_message_bytes  # ...and dropped past 16 KiB
        nursery.cancel_scope.cancel()


@asynccontextmanager
async def _listener(settings: LeanSettings = SETTINGS) -> AsyncIterator[int]:
    async def route(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await receive()
        await send({"type": "websocket.accept"})
        await trio.sleep_forever()

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        await send({"type": "http.response.start", "status": 404, "headers": []})
        await send({"type": "http.response.body", "body": b"{}"})

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            lambda task_status: serve_lean(
                {"/agent": route},
                app,
                ("127.0.0.1", 0),
                settings,
                tls=None,
                shutdown_trigger=stop.wait,
                graceful_timeout_s=0.5,
                task_status=task_status,
            )
        )
        yield int(urls[0].rsplit(":", 1)[1])
        stop.set()


async def _answer(port: int, head: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(head)
        data = b""
        with trio.fail_after(10):  # a hang guard: the answer comes at once
            while chunk := await stream.receive_some(65536):
                data += chunk
        return data


async def test_sockets_are_counted_from_accept() -> None:
    async with _listener() as port:
        silent = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        fourth = await trio.open_tcp_stream("127.0.0.1", port)
        with trio.fail_after(10):  # closed at once, not after the 60 s handshake deadline
            assert await fourth.receive_some(10) == b""
        await silent[0].aclose()
        upgrade = (
            b"GET /agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
        )
        with trio.fail_after(10):
            while True:  # one slot is free again once the server has seen the close
                stream = await trio.open_tcp_stream("127.0.0.1", port)
                await stream.send_all(upgrade)
                answer = await stream.receive_some(100)
                if answer:
                    break
                await trio.sleep(0.01)
        assert answer.startswith(b"HTTP/1.1 101")
        # An upgraded socket is the gateway's to count: the listener's slot is free.
        more = await trio.open_tcp_stream("127.0.0.1", port)
        await more.send_all(upgrade)
        assert (await more.receive_some(100)).startswith(b"HTTP/1.1 101")
        for held in (*silent[1:], fourth, stream, more):
            await held.aclose()


async def test_a_trusted_proxy_counts_only_in_all() -> None:
    proxies = (ipaddress.ip_network("127.0.0.0/8"),)
    settings = LeanSettings(
        max_message_bytes=1024,
        handshake_timeout_s=60,
        body_timeout_s=2,
        max_body_bytes=1024,
        max_unanswered_per_address=1,
        max_unanswered=3,
        proxies=proxies,
    )
    async with _listener(settings) as port:
        held = [await trio.open_tcp_stream("127.0.0.1", port) for _ in range(3)]
        answer = await _answer(port, b"GET /nothing HTTP/1.1\r\nHost: x\r\n\r\n")
        assert answer == b""  # the fourth: over the total
        await held[0].aclose()
        with trio.fail_after(10):
            while not (answer := await _answer(port, b"GET /x HTTP/1.1\r\nHost: x\r\n\r\n")):
                await trio.sleep(0.01)
        assert answer.startswith(b"HTTP/1.1 404")
        for stream in held[1:]:
            await stream.aclose()


@pytest.mark.parametrize(
    ("head", "status"),
    [
        # A non-ASCII byte in the upgrade's Connection header (wsproto decodes it).
        (
            b"GET /agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nConnection: Upgrade\xff\r\n"
            b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n",
            b"400",
        ),
        (
            b"GET /agent HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\nX-Pad: "
            + b"a" * (29 << 10)
            + b"\r\n\r\n",
            b"431",
        ),
        (b"GET /agent HTTP/1.1\r\nHost: x\r\n" + b"a:b\r\n" * 15_000 + b"\r\n", b"431"),
        (b"GET /agent HTTP/1.1\r\nHost: x\r\n" + b"a:b\r\n" * 150 + b"\r\n", b"431"),
        (b"POST /enroll HTTP/1.1\r\nHost: x\r\nX-Pad: " + b"a" * (17 << 10) + b"\r\n\r\n", b"431"),
    ],
)
async def test_malformed_and_oversized_heads_get_their_answer(
    head: bytes, status: bytes, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    async with _listener() as port:
        for _ in range(5):
            answer = await _answer(port, head)
            assert answer.startswith(b"HTTP/1.1 " + status), answer[:80]
    assert "Traceback" not in caplog.text
    records = [r for r in caplog.records if r.name == "monitoring_ws.lean"]
    assert len(records) == 5  # one line a request
    assert all(len(r.getMessage()) < 300 and r.levelno < logging.WARNING for r in records)


async def test_a_frame_written_at_once_that_the_socket_takes_in_part_is_finished_first() -> None:
    ours, theirs = trio.socket.socketpair()
    stream, peer = trio.SocketStream(ours), trio.SocketStream(theirs)
    client, handshake = _handshake()
    socket = LeanSocket(stream, handshake, SETTINGS)
    assert (await socket.receive())["type"] == "websocket.connect"
    await socket.send({"type": "websocket.accept"})
    assert socket.send_text_now("small") is True  # the socket took it whole
    big = "b" * (8 << 20)  # more than a socket buffer holds
    assert socket.send_text_now(big) is None  # taken in part: the rest waits for flush
    assert socket.send_text_now("after") is False  # nothing goes before the rest
    texts: list[str] = []
    parts: list[str] = []

    async def read_all() -> None:
        while len(texts) < 3:
            client.receive_data(await peer.receive_some(1 << 16))
            for event in client.events():
                if isinstance(event, TextMessage):
                    parts.append(event.data)
                    if event.message_finished:
                        texts.append("".join(parts))
                        parts.clear()

    with trio.fail_after(30):  # a hang is a failure, not a stuck suite
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read_all)
            await socket.flush()
            await socket.send({"type": "websocket.send", "text": "after"})
    assert texts == ["small", big, "after"]  # whole and in order


@pytest.mark.parametrize("size", [0, 1, 125, 126, 127, 65535, 65536, 70000])
def test_a_text_frame_written_at_once_is_the_frame_wsproto_writes(size: int) -> None:
    server = WSConnection(ConnectionType.SERVER)
    client = WSConnection(ConnectionType.CLIENT)
    server.receive_data(client.send(Request(host="a", target="/")))
    next(server.events())
    client.receive_data(server.send(AcceptConnection()))
    next(client.events())
    text = "\u00e9" * (size // 2) + "x" * (size % 2)  # non-ASCII: lengths count bytes
    assert _text_frame(text) == server.send(TextMessage(data=text))
