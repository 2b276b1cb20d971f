"""/agent on a real server: handshake, every close code, replacement, backpressure,
shutdown; each against both agent listeners (Hypercorn's and the lean one)."""

from __future__ import annotations

import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
import rfc8785
import trio
import trio.testing
from trio.testing import MockClock
from trio_websocket import HandshakeError, open_websocket_url

from monitoring_ws.protocol import (
    CloseCode,
    derive_agent_key,
    parse_retry_after,
    random_nonce,
)
from tests.support.served import Served as Running

from ..conftest import StartServer
from ..support import frame as signed_frame
from ..support.eventually import open_connections
from ..support.observe import connected, counters
from .agents import SECRET, agent_address, close_code, first_frame_close, now_ms, open_agent

pytestmark = pytest.mark.usefixtures("agent_listener")

HELLO = {
    "protocol": 1,
    "agentVersion": "1",
    "hostname": "h",
    "capabilities": {"commands": ["ping"], "features": []},
}


def signed(
    kind: str,
    payload: dict[str, Any],
    agent_id: str = "agent-x",
    *,
    key: bytes | None = None,
    ts: int | None = None,
) -> str:
    """A frame signed with the gateway's key for ``agent_id`` (or ``key``), stamped now."""
    key = key or derive_agent_key(SECRET, agent_id)
    return signed_frame(
        kind, payload, agent_id=agent_id, key=key, ts=ts or now_ms(), nonce_value=random_nonce()
    )


async def test_a_client_from_the_docs_alone_works(server: Running) -> None:
    """The docs/protocol.md recipe (stdlib HMAC over rfc8785, no project code): it
    authenticates, streams, and answers a command that it verified itself."""
    agent_id = "docs-agent"
    key = hmac.digest(
        SECRET.encode(), ("monitoring-ws/agent-key/v1:" + agent_id).encode(), hashlib.sha256
    )

    def envelope(kind: str, payload: dict[str, object]) -> str:
        unsigned = {
            "type": kind,
            "agentId": agent_id,
            "ts": now_ms(),
            "nonce": str(uuid.uuid4()),
            "payload": payload,
        }
        signature = hmac.digest(key, rfc8785.dumps(unsigned), hashlib.sha256).hex()
        return json.dumps({**unsigned, "signature": signature})

    def verified(frame: str) -> dict[str, object]:
        message = json.loads(frame)
        unsigned = {k: v for k, v in message.items() if k != "signature"}
        expected = hmac.digest(key, rfc8785.dumps(unsigned), hashlib.sha256).hex()
        assert hmac.compare_digest(expected, message["signature"])
        return message

    async with open_websocket_url(server.agent_urls[0], connect_timeout=5) as ws:
        await ws.send_message(envelope("auth", HELLO))
        reply = verified(await ws.get_message())
        assert reply["type"] == "auth"
        assert reply["payload"]["ok"] is True  # type: ignore[index]
        await ws.send_message(envelope("metrics", {"cpu": {"percent": 3}}))
        await ws.send_message(envelope("heartbeat", {}))
        answer = verified(await ws.get_message())
        assert answer["type"] == "heartbeat"
        assert "serverTime" in answer["payload"]  # type: ignore[operator]

        async with httpx.AsyncClient(base_url=server.api_url) as http:
            results: list[httpx.Response] = []

            async def call() -> None:
                body = {"command": "ping", "args": {"n": 1}}
                results.append(
                    await http.post(f"/api/websocket/agents/{agent_id}/command", json=body)
                )

            async with trio.open_nursery() as n:
                n.start_soon(call)
                command = verified(await ws.get_message())
                assert command["type"] == "command"
                payload = command["payload"]
                assert isinstance(payload, dict)
                result = {
                    "commandId": payload["commandId"],
                    "ok": True,
                    "result": {"pong": True},
                    "durationMs": 1,
                }
                await ws.send_message(envelope("command_result", result))
            assert results[0].status_code == 200
            assert results[0].json()["result"] == {"pong": True}
            status = (await http.get(f"/api/websocket/agents/{agent_id}")).json()
            assert status["metrics"]["values"] == {"cpu": {"percent": 3}}


async def test_bad_first_frames(server: Running) -> None:
    url = server.agent_urls[0]
    wrong_key = derive_agent_key("not-the-secret", "agent-x")
    cases = [
        ("{not json", CloseCode.MALFORMED),
        (json.dumps({"type": "auth"}), CloseCode.MALFORMED),
        (signed("auth", {**HELLO, "protocol": 2}), CloseCode.MALFORMED),
        (signed("auth", HELLO, key=wrong_key), CloseCode.AUTH_FAILED),
        (signed("auth", HELLO, ts=now_ms() - 400_000), CloseCode.AUTH_FAILED),
        (signed("metrics", {"cpu": 1}), CloseCode.AUTH_FAILED),
        (b"\x01\x02", CloseCode.UNSUPPORTED_DATA),
    ]
    for frame, expected in cases:
        code, reason = await first_frame_close(url, frame)
        assert code == expected, (frame, code, reason)
        if expected is CloseCode.AUTH_FAILED:
            assert reason == "authentication failed"


async def test_repeated_auth_nonce_is_refused(server: Running) -> None:
    frame = signed("auth", HELLO)
    async with open_websocket_url(server.agent_urls[0], connect_timeout=5) as ws:
        await ws.send_message(frame)
        assert json.loads(await ws.get_message())["payload"]["ok"] is True
    code, _ = await first_frame_close(server.agent_urls[0], frame)
    assert code == CloseCode.AUTH_FAILED


async def test_frame_limit_is_1009(start_server: StartServer) -> None:
    running = await start_server(max_frame_bytes=2048)
    code, _ = await first_frame_close(running.agent_urls[0], "x" * 4096)
    assert code == CloseCode.MESSAGE_TOO_BIG


async def test_agent_mismatch_after_auth_is_4403(server: Running) -> None:
    async with open_agent(server.agent_urls[0], "agent-a") as agent:
        other = derive_agent_key(SECRET, "agent-b")
        await agent.send(signed("metrics", {}, agent_id="agent-b", key=other))
        assert await close_code(agent.ws) == CloseCode.AGENT_MISMATCH


async def test_auth_deadline_is_4408(
    start_server: StartServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="monitoring_ws")
    running = await start_server(auth_timeout_ms=300)
    async with open_websocket_url(running.agent_urls[0], connect_timeout=5) as ws:
        assert await close_code(ws, timeout=3) == CloseCode.TIMEOUT
    # Counted, not logged a line each at INFO: a flood of silent sockets is not a flood
    # of log lines.
    assert (await counters(running.api_url))["closed_4408"] == 1
    assert not [r for r in caplog.records if "with 4408" in r.getMessage()]


def following(clock: MockClock) -> Callable[[], int]:
    """Wall-clock ms that move with trio's (mock) clock: the server's sessions go by it."""
    del clock  # its time is trio's time
    base = now_ms() - int(trio.current_time() * 1000)
    return lambda: base + int(trio.current_time() * 1000)


async def watchdog(clock: MockClock) -> None:
    """After 5 real seconds, move the clock on so that a wait that would hang times out."""
    await trio.to_thread.run_sync(time.sleep, 5, abandon_on_cancel=True)
    clock.jump(60)


async def test_three_silent_heartbeat_intervals_are_4408(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    # The default interval (30 s), in no time: trio's clock stands still until jumped.
    running = await start_server(clock=following(mock_clock))
    async with open_agent(running.agent_urls[0], "quiet") as agent:
        mock_clock.jump(89)
        await trio.testing.wait_all_tasks_blocked()
        assert agent.ws.closed is None  # 89 s of silence: allowed
        mock_clock.jump(2)
        async with trio.open_nursery() as nursery:
            nursery.start_soon(watchdog, mock_clock)
            assert await close_code(agent.ws) == CloseCode.TIMEOUT
            nursery.cancel_scope.cancel()


async def test_heartbeats_keep_a_connection_open(
    start_server: StartServer, mock_clock: MockClock
) -> None:
    clock = following(mock_clock)
    running = await start_server(clock=clock)
    async with open_agent(running.agent_urls[0], "chatty") as agent:
        for _ in range(6):  # 180 s: twice the silence allowance
            mock_clock.jump(30)
            await agent.send(agent.session.heartbeat(clock()))
            await agent.events()
        await trio.testing.wait_all_tasks_blocked()
        assert agent.ws.closed is None


async def test_newer_connection_replaces_the_older_with_4409(server: Running) -> None:
    url = server.agent_urls[0]
    async with open_agent(url, "twin") as first, open_agent(url, "twin") as second:
        assert await close_code(first.ws) == CloseCode.REPLACED
        await second.send(second.session.heartbeat(now_ms()))
        await second.events()
        assert second.ws.closed is None
        assert await connected(server.api_url, "twin")


async def test_duplicates_are_dropped_and_counted(server: Running) -> None:
    async with open_agent(server.agent_urls[0], "dup") as agent:
        frame = agent.session.metrics({"n": 1}, now_ms())
        await agent.send(frame)
        await agent.send(frame)
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()
        assert (await counters(server.api_url))["duplicates"] == 1
        assert agent.ws.closed is None


async def test_auth_failures_per_address_get_4429(start_server: StartServer) -> None:
    running = await start_server(auth_failures_per_minute=2)
    wrong = derive_agent_key("wrong", "agent-x")
    for _ in range(2):
        code, _ = await first_frame_close(running.agent_urls[0], signed("auth", HELLO, key=wrong))
        assert code == CloseCode.AUTH_FAILED
    await open_connections(running.api_url, 0)
    code, reason = await first_frame_close(running.agent_urls[0], signed("auth", HELLO))
    assert code == CloseCode.TOO_MANY_ATTEMPTS
    assert reason is not None
    hint = parse_retry_after(reason)
    assert hint is not None
    assert 1 <= hint <= 60


async def test_unauthenticated_sockets_are_capped(start_server: StartServer) -> None:
    running = await start_server(max_unauthenticated=1)
    url = running.agent_urls[0]
    async with open_websocket_url(url, connect_timeout=5):  # holds the one slot
        await open_connections(running.api_url, 1)
        async with open_websocket_url(url, connect_timeout=5) as second:
            assert await close_code(second) == CloseCode.TOO_MANY_ATTEMPTS
            assert parse_retry_after(second.closed.reason or "") == 1  # type: ignore[union-attr]


async def test_slow_agent_gets_backpressure_then_1013(start_server: StartServer) -> None:
    running = await start_server(outgoing_queue=2)
    url = f"{running.api_url}/api/websocket/agents/slow/command"
    big = {"command": "ping", "args": {"blob": "x" * 900_000}, "timeoutMs": 5000}
    # The agent reads nothing: trio-websocket stops reading the socket once its queue is full.
    async with open_agent(running.agent_urls[0], "slow", message_queue_size=0) as agent:
        statuses: list[int] = []
        async with httpx.AsyncClient(timeout=10) as http, trio.open_nursery() as n:

            async def post() -> None:
                statuses.append((await http.post(url, json=big)).status_code)

            for _ in range(12):
                n.start_soon(post)
                await trio.sleep(0.05)
                if (await counters(running.api_url))["closed_1013"]:
                    break
            assert (await counters(running.api_url))[
                "closed_1013"
            ] == 1  # the queue overflowed and the close was decided
            # Reading again lets the frame in progress finish; the close comes right after it.
            assert await close_code(agent.ws, 10) == CloseCode.TRY_AGAIN_LATER
        assert 502 in statuses  # callers waiting on the slow agent learn it is gone


async def raw_upgrade(server: Running, *extra: str) -> tuple[trio.SocketStream, bytes, bytes]:
    """A WebSocket upgrade by hand: the stream, the response's head, and what followed."""
    stream = await trio.open_tcp_stream(*agent_address(server.agent_urls[0]))
    lines = [
        "GET /agent HTTP/1.1",
        "Host: localhost",
        "Upgrade: websocket",
        "Connection: Upgrade",
        "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==",
        "Sec-WebSocket-Version: 13",
        *extra,
    ]
    await stream.send_all(("\r\n".join(lines) + "\r\n\r\n").encode())
    response = b""
    with trio.fail_after(5):
        while b"\r\n\r\n" not in response:
            response += await stream.receive_some(4096)
    head, _, after = response.partition(b"\r\n\r\n")
    return stream, head.lower(), after


async def test_compression_offer_is_declined(server: Running) -> None:
    offer = "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits"
    stream, head, _ = await raw_upgrade(server, offer)
    await stream.aclose()
    assert head.startswith(b"http/1.1 101")
    assert b"sec-websocket-extensions" not in head


async def test_a_frame_the_protocol_forbids_is_closed_with_1002(
    server: Running, agent_listener: str
) -> None:
    """An unmasked client frame (RFC 6455 5.1): the connection ends at once; the lean
    listener says why with 1002 (Hypercorn drops the TCP connection without a close)."""
    stream, head, after = await raw_upgrade(server)
    assert head.startswith(b"http/1.1 101")
    with trio.fail_after(5):
        await stream.send_all(b"\x81\x05hello")  # FIN, text, 5 bytes, no mask
        while len(after) < 4:
            chunk = await stream.receive_some(4096)
            if not chunk:
                break
            after += chunk
    await stream.aclose()
    if agent_listener == "hypercorn" and not after:
        return
    assert after[0] == 0x88  # a close frame
    assert int.from_bytes(after[2:4], "big") == 1002


async def test_other_websocket_paths_are_refused(server: Running) -> None:
    url = server.agent_urls[0].replace("/agent", "/other")
    with pytest.raises(HandshakeError):
        async with open_websocket_url(url, connect_timeout=5):
            pass


async def test_shutdown_closes_agents_with_1001_and_a_retry_hint(server: Running) -> None:
    async with open_agent(server.agent_urls[0], "leaving") as agent:
        server.stop()
        assert await close_code(agent.ws) == CloseCode.GOING_AWAY
        assert agent.ws.closed is not None
        assert parse_retry_after(agent.ws.closed.reason or "") == 5


async def test_shutdown_refuses_commands_with_503(server: Running) -> None:
    async with open_agent(server.agent_urls[0], "agent-s"):
        server.gateway.live.shutting_down = True  # what stop() sets first
        async with httpx.AsyncClient(base_url=server.api_url) as http:
            response = await http.post(
                "/api/websocket/agents/agent-s/command", json={"command": "ping"}
            )
        assert response.status_code == 503
        assert response.json()["error"]["code"] == "shutting_down"
        server.gateway.live.shutting_down = False
