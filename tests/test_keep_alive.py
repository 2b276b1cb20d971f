"""Connections to the API's port: kept alive, pipelined, and closed when the client asks
(or speaks HTTP/1.0), on both servers of the port."""

from __future__ import annotations

import re

import pytest
import trio

from tests.gateway.agents import agent_address
from tests.support.served import Served

pytestmark = pytest.mark.usefixtures("api_server")


async def exchange(server: Served, data: bytes, answers: int) -> tuple[list[bytes], bool]:
    """Send ``data`` on one connection; the statuses of the answers, and whether the
    server closed the connection after them."""
    stream = await trio.open_tcp_stream(*agent_address(server.api_url))
    received, closed = b"", False
    async with stream:
        await stream.send_all(data)
        with trio.fail_after(30):  # a hang guard only
            while not closed:
                with trio.move_on_after(1) as quiet:  # nothing more: kept open
                    chunk = await stream.receive_some(65536)
                    closed = not chunk
                    received += chunk
                if quiet.cancelled_caught and received.count(b"HTTP/1.") >= answers:
                    break
    return re.findall(rb"HTTP/1\.[01] (\d{3}) ", received), closed


def get(path: str, *extra: str, version: str = "1.1") -> bytes:
    return "\r\n".join([f"GET {path} HTTP/{version}", "Host: localhost", *extra, "", ""]).encode()


async def test_pipelined_requests_are_answered_in_order_on_one_connection(
    server: Served,
) -> None:
    lines, closed = await exchange(server, get("/healthz") + get("/nope") + get("/healthz"), 3)
    assert lines == [b"200", b"404", b"200"]
    assert not closed  # kept alive after them


# Hypercorn answers these too, but leaves the socket for the client to close.


async def test_connection_close_is_honoured(server: Served, api_server: str) -> None:
    lines, closed = await exchange(server, get("/healthz", "Connection: close"), 1)
    assert lines == [b"200"]
    assert closed or api_server == "hypercorn"


async def test_http_1_0_is_answered_then_closed(server: Served, api_server: str) -> None:
    request = get("/healthz", "Connection: keep-alive", version="1.0")
    lines, closed = await exchange(server, request, 1)
    assert lines == [b"200"]
    assert closed or api_server == "hypercorn"
