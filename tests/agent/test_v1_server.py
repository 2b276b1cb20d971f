"""Our agent against a minimal protocol v1 server written here from docs/protocol.md alone
(stdlib HMAC over rfc8785; its auth reply holds only the members the brief lists, without
``authNonce``): the agent authenticates, checks the reply's ts, and runs a command."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
import uuid
from functools import partial
from typing import Any

import rfc8785
import trio
from trio_websocket import WebSocketRequest, serve_websocket

from monitoring_ws.agent.main import build_agent
from monitoring_ws.protocol import AgentSession, AuthHello, Capabilities, CloseCode

from ..gateway.agents import SECRET
from ..support.eventually import eventually
from .test_agent import settings_for

AGENT = "v1-agent"
KEY = hmac.digest(SECRET.encode(), f"monitoring-ws/agent-key/v1:{AGENT}".encode(), hashlib.sha256)


def envelope(kind: str, payload: dict[str, Any], ts_offset_ms: int = 0) -> str:
    unsigned = {
        "type": kind,
        "agentId": AGENT,
        "ts": time.time_ns() // 1_000_000 + ts_offset_ms,
        "nonce": str(uuid.uuid4()),
        "payload": payload,
    }
    signature = hmac.digest(KEY, rfc8785.dumps(unsigned), hashlib.sha256).hex()
    return json.dumps({**unsigned, "signature": signature})


def verified(frame: str) -> dict[str, Any]:
    message: dict[str, Any] = json.loads(frame)
    unsigned = {k: v for k, v in message.items() if k != "signature"}
    expected = hmac.digest(KEY, rfc8785.dumps(unsigned), hashlib.sha256).hex()
    assert hmac.compare_digest(expected, message["signature"])
    return message


def v1_reply() -> dict[str, Any]:
    return {
        "ok": True,
        "sessionId": "s-1",
        "serverTime": time.time_ns() // 1_000_000,
        "heartbeatIntervalMs": 30_000,
        "features": [],
    }


async def test_our_agent_works_with_a_server_that_does_not_echo_the_nonce() -> None:
    results: list[dict[str, Any]] = []

    async def handler(request: WebSocketRequest) -> None:
        ws = await request.accept()
        hello = verified(await ws.get_message())
        assert hello["type"] == "auth"
        await ws.send_message(envelope("auth", v1_reply()))
        command = {"commandId": "c-1", "command": "ping", "args": {}, "timeoutMs": 5000}
        await ws.send_message(envelope("command", command))
        while True:
            message = verified(await ws.get_message())
            if message["type"] == "command_result":
                results.append(message["payload"])
                return

    async with trio.open_nursery() as nursery:
        server = await nursery.start(partial(serve_websocket, handler, "127.0.0.1", 0, None))
        port = server.port
        agent = build_agent(settings_for(f"ws://127.0.0.1:{port}/agent", AGENT))
        nursery.start_soon(agent.run)
        await eventually(lambda: bool(results), timeout_s=10)
        nursery.cancel_scope.cancel()
    assert results[0]["commandId"] == "c-1"
    assert results[0]["ok"] is True
    assert results[0]["result"]["pong"] is True


def test_a_reply_without_the_echo_is_checked_like_any_frame() -> None:
    hello = AuthHello("t", "h", Capabilities(("ping",), ()))

    def session() -> AgentSession:
        agent = AgentSession(agent_id=AGENT, key=KEY, hello=hello)
        agent.start(time.time_ns() // 1_000_000)
        return agent

    now = time.time_ns() // 1_000_000
    fresh = session()
    assert type(fresh.receive(envelope("auth", v1_reply()), now)[0]).__name__ == "AuthAccepted"
    stale = session()
    [closed] = stale.receive(envelope("auth", v1_reply(), ts_offset_ms=-400_000), now)
    assert closed.code == CloseCode.AUTH_FAILED  # type: ignore[attr-defined]
    wrong_echo = session()
    [closed] = wrong_echo.receive(envelope("auth", {**v1_reply(), "authNonce": "x" * 36}), now)
    assert closed.code == CloseCode.AUTH_FAILED  # type: ignore[attr-defined]
