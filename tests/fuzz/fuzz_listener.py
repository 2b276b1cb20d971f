"""Coverage-guided fuzzing of the lean agent listener (``./dev fuzz``): request heads,
bodies, and WebSocket frames after a real upgrade, through ``host/lean.py`` and
``host/leanhttp.py`` (with wsproto and h11 under them) on in-memory streams.

Each input is one connection, chosen by its first byte: raw bytes as a request; a valid
upgrade to ``/agent`` followed by fuzzed frame bytes; a ``POST /enroll`` head followed by
a fuzzed body; fuzzed header lines inside an upgrade. The second byte cuts the input into
chunks of that size, as a network would. The listener's clock is trio's ``MockClock``, so
its deadlines pass at once. A crash is: any exception out of the listener, an ERROR it
logs (a bug it caught), an answer that is not HTTP, more than one answer, or a
connection that is still open after every deadline has passed.

    .venv/bin/python tests/fuzz/fuzz_listener.py -runs=200000 [-seed=N] [CORPUS_DIR]
"""

from __future__ import annotations

import json
import logging
from typing import Any

import trio
import trio.testing
from harness import atheris, fuzz


def _imports() -> Any:
    from monitoring_ws.host.serving import lean  # noqa: PLC0415
    from monitoring_ws.plugin_api import TOO_BIG  # noqa: PLC0415

    return lean, TOO_BIG


if atheris is not None:
    with atheris.instrument_imports(include=["monitoring_ws.host", "wsproto", "h11"]):
        lean, TOO_BIG = _imports()
else:
    lean, TOO_BIG = _imports()

LIMITS: dict[str, Any] = {
    "max_message_bytes": 4096,
    "max_first_message_bytes": 1024,
    "handshake_timeout_s": 10,
    "body_timeout_s": 10,
    "max_body_bytes": 4096,
}
SETTINGS = lean.LeanSettings(**LIMITS)
#: The API's listener: connections kept alive, larger heads (an input's first byte >= 4).
KEPT_ALIVE = lean.LeanSettings(**LIMITS, keep_alive=True, max_head_bytes=64 * 1024)
UPGRADE = (
    b"GET /agent HTTP/1.1\r\nHost: fuzz\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
)
ENROLL = b"POST /enroll HTTP/1.1\r\nHost: fuzz\r\nContent-Type: application/json\r\n"
#: The most any connection may write back (an answer, pongs and echoes of small inputs).
MAX_OUTPUT = 1 << 20
SEEDS = [
    b"\x00\x00" + UPGRADE + b"\r\n",
    b"\x00\x07GET /x HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x01\x00\x81\x85\x00\x00\x00\x00hello\x89\x80\x00\x00\x00\x00\x88\x82\x00\x00\x00\x00\x03\xe8",
    b"\x01\x03\x01\x83\x00\x00\x00\x00abc\x80\x83\x00\x00\x00\x00def",
    b"\x02\x00Content-Length: 5\r\n\r\nhello",
    b"\x02\x05Transfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"\x03\x00Sec-WebSocket-Extensions: permessage-deflate\r\nConnection: x\xff\r\n",
    b"\x04\x09GET /a%2F HTTP/1.1\r\nHost: a\r\n\r\nGET /b HTTP/1.1\r\nHost: a\r\n\r\n",
    b"\x06\x00Content-Length: 2\r\n\r\nhiPOST /enroll HTTP/1.1\r\nHost: a\r\n\r\n",
]


class _Errors(logging.Handler):
    """Collects what the listener logs at ERROR or above: a bug it caught."""

    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


ERRORS = _Errors()
logging.getLogger("monitoring_ws").addHandler(ERRORS)
logging.getLogger("monitoring_ws").propagate = False


async def _echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """A route like the gateway's: accept, answer each message, close on a big one."""
    assert (await receive())["type"] == "websocket.connect"
    await send({"type": "websocket.accept", "subprotocol": None, "headers": []})
    while True:
        message = await receive()
        if message["type"] == "websocket.disconnect":
            return
        if TOO_BIG in message:
            await send({"type": "websocket.close", "code": 1009, "reason": "too big"})
            return
        text = message.get("text")
        await send({"type": "websocket.send", "text": text, "bytes": message.get("bytes")})


async def _app(scope: dict[str, Any], receive: Any, send: Any) -> None:
    """Plain HTTP: read the body, answer its length."""
    body = (await receive()).get("body", b"")
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": json.dumps({"bytes": len(body)}).encode()})


def _request(data: bytes) -> bytes:
    """The bytes the connection sends, from the input (first byte: what kind, and from 4
    on, the API's kept-alive listener)."""
    kind, rest = data[0] % 4, data[2:]
    if kind == 0:
        return rest
    if kind == 1:
        return UPGRADE + b"\r\n" + rest
    if kind == 2:
        return ENROLL + rest
    return UPGRADE + rest + b"\r\n\r\n"


async def _connection(data: bytes) -> bytes:
    request, chunk = _request(data), data[1] or len(data)
    settings = KEPT_ALIVE if data[0] % 8 >= 4 else SETTINGS
    client, server = trio.testing.memory_stream_pair()
    received = bytearray()

    async def read() -> None:
        while True:
            try:
                piece = await client.receive_some(65536)
            except trio.BrokenResourceError:
                return
            if not piece:
                return
            received.extend(piece)
            if len(received) > MAX_OUTPUT:
                raise AssertionError(f"the listener wrote over {MAX_OUTPUT} bytes")

    with trio.fail_after(600):  # virtual seconds: every deadline of the listener is shorter
        async with trio.open_nursery() as nursery:
            nursery.start_soon(read)
            nursery.start_soon(
                lambda: lean._serve_connection(
                    {"/agent": _echo},
                    _app,
                    server,
                    settings,
                    None,
                    unanswered=lean._Unanswered(settings),
                )
            )
            for at in range(0, len(request), chunk):
                try:
                    await client.send_all(request[at : at + chunk])
                except (trio.BrokenResourceError, trio.ClosedResourceError):
                    break
            with trio.move_on_after(0):
                await client.send_eof()
    return bytes(received)


def one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    ERRORS.records.clear()
    answer = trio.run(_connection, data, clock=trio.testing.MockClock(autojump_threshold=0))
    if ERRORS.records:
        raise AssertionError(f"the listener logged an error: {ERRORS.records[0].getMessage()}")
    if answer and not answer.startswith(b"HTTP/1.1 "):
        raise AssertionError(f"an answer that is not HTTP: {answer[:80]!r}")
    # One answer per connection; kept alive, one per request line sent and a last refusal.
    most = _request(data).count(b" HTTP/") + 1 if data[0] % 8 >= 4 else 1
    if answer.count(b"HTTP/1.1 ") > most and not answer.startswith(b"HTTP/1.1 101"):
        raise AssertionError(f"more answers than requests: {answer[:200]!r}")


def main() -> None:
    fuzz(one_input, SEEDS, name="mws-fuzz-listener")


if __name__ == "__main__":
    main()
