"""The lean agent listener on its own (host/lean.py): a handler that fails ends its
connection, never the listener; plain HTTP goes to the app; shutdown stops accepting.
The endpoint behaviour itself is tested against both listeners in tests/gateway."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionClosed, open_websocket_url

from monitoring_ws.host.serving.lean import LeanSettings, serve_lean

SETTINGS = LeanSettings(
    max_message_bytes=1024, handshake_timeout_s=2, body_timeout_s=2, max_body_bytes=1024
)


async def test_a_failing_handler_ends_only_its_connection(caplog: pytest.LogCaptureFixture) -> None:
    calls = 0

    async def echo(scope: dict[str, Any], receive: Any, send: Any) -> None:
        nonlocal calls
        calls += 1
        assert (await receive())["type"] == "websocket.connect"
        await send({"type": "websocket.accept"})
        if calls == 1:
            raise RuntimeError("a bug in the handler")
        message = await receive()
        await send({"type": "websocket.send", "text": message["text"].upper()})
        await send({"type": "websocket.close", "code": 1000, "reason": ""})

    async def app(scope: dict[str, Any], receive: Any, send: Any) -> None:
        body = (await receive())["body"]
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"got " + body})

    stop = trio.Event()
    async with trio.open_nursery() as nursery:
        urls = await nursery.start(
            lambda task_status: serve_lean(
                {"/agent": echo},
                app,
                ("127.0.0.1", 0),
                SETTINGS,
                tls=None,
                shutdown_trigger=stop.wait,
                graceful_timeout_s=1,
                task_status=task_status,
            )
        )
        url = urls[0].replace("http", "ws") + "/agent"
        with pytest.raises(ConnectionClosed):  # the first handler raised: its socket ends
            async with open_websocket_url(url, connect_timeout=5) as ws:
                await ws.get_message()
        assert "a bug in the handler" in caplog.text
        async with open_websocket_url(url, connect_timeout=5) as ws:  # the listener serves on
            await ws.send_message("hello")
            assert await ws.get_message() == "HELLO"
        async with httpx.AsyncClient(base_url=urls[0]) as http:
            answer = await http.post("/enroll", content=b"x")
        assert answer.text == "got x"
        assert answer.headers["connection"] == "close"
        stop.set()
    with pytest.raises(OSError, match="all attempts to connect"):  # nothing listens now
        await trio.open_tcp_stream("127.0.0.1", int(urls[0].rsplit(":", 1)[1]))
