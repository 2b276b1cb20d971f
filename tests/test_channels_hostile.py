"""Channels against hostile peers and callers: an agent that breaks the channel rules,
one that never negotiated channels, tokens without the scopes, a page on another site."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import (
    ConnectionClosed,
    ConnectionRejected,
    WebSocketConnection,
    open_websocket_url,
)

from monitoring_ws.clock import wall_ms
from monitoring_ws.protocol import (
    FEATURE_CHANNELS,
    AgentSession,
    AuthHello,
    Capabilities,
    ChannelControl,
    ChannelControlReceived,
    derive_agent_key,
)

from .conftest import SECRET, StartServer
from .test_channels import SHELLS, _control, _start, _ws_url
from .test_ctl import ctl
from .test_jobs import all_connected


async def test_an_agent_that_breaks_a_channels_rules_loses_that_channel_or_its_connection(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    server = await start_server(channel_window_bytes=1024)
    hello = AuthHello("0.0", "raw", Capabilities(("ping",), (FEATURE_CHANNELS,)))
    session = AgentSession(agent_id="raw-1", key=derive_agent_key(SECRET, "raw-1"), hello=hello)
    async with open_websocket_url(server.agent_urls[0]) as agent:
        await agent.send_message(session.start(wall_ms()))
        session.receive(await agent.get_message(), wall_ms())
        assert session.speaks_channels
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
            await all_connected(http, 1)
        with trio.fail_after(30):
            async with open_websocket_url(_ws_url(server.api_url, "raw-1", kind="shell")) as api:
                [received] = session.receive(await agent.get_message(), wall_ms())
                assert isinstance(received, ChannelControlReceived)
                opened = received.control
                assert (opened.op, opened.kind, opened.window) == ("open", "shell", 1024)
                accept = ChannelControl("accept", opened.channel_id, window=1 << 20)
                await agent.send_message(session.channel(accept, wall_ms()))
                assert (await _control(api))["type"] == "opened"
                # 2 KiB past a window of 1 KiB: the channel closes, the connection stays.
                frame = session.seal_channel_data(opened.channel_id, 1, bytes(2048))
                await agent.send_message(frame)
                closed = await _control(api)
                assert closed["type"] == "closed"
                assert closed["reason"] == "violation"
                assert "past a window" in closed["message"]
                [told] = session.receive(await agent.get_message(), wall_ms())
                assert isinstance(told, ChannelControlReceived)
                assert (told.control.op, told.control.reason) == ("close", "violation")
        await agent.send_message(session.heartbeat(wall_ms()))
        session.receive(await agent.get_message(), wall_ms())  # still answered
        # Data for a channel never opened: the connection closes with 4400.
        await agent.send_message(session.seal_channel_data(99, 1, b"x"))
        with trio.fail_after(30):
            code = await _close_code(agent)
        assert code == 4400


async def _close_code(ws: WebSocketConnection) -> int | None:
    """Read until the server closes: its close code."""
    try:
        while True:
            await ws.get_message()
    except ConnectionClosed as closed:
        return closed.reason.code


async def test_an_agent_without_channels_is_refused_clearly(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path, monkeypatch: Any
) -> None:
    monkeypatch.setattr("monitoring_ws.agent.client.FEATURE_CHANNELS", "not-channels")
    api = await _start(start_server, nursery, tmp_path, sessions=SHELLS)  # on, unreachable
    with trio.fail_after(30):
        async with open_websocket_url(_ws_url(api, "box-1", kind="shell")) as ws:
            refused = await _control(ws)
    assert refused["code"] == "not_supported"
    assert "did not negotiate channels" in refused["message"]
    code, _, err = await ctl(api, "shell", "box-1", cwd=tmp_path)
    assert code == 77
    assert "did not negotiate channels" in err


TOKENS: list[Any] = [
    {"name": "reader", "token": "reader-token-0123456", "scopes": ["agents:read"]},
    {
        "name": "web-ops",
        "token": "web-token-0123456789",
        "scopes": ["sessions:shell"],
        "agents": ["web-*"],
    },
    {
        "name": "ops",
        "token": "ops-token-0123456789",
        "scopes": ["sessions:shell", "recordings:read"],
    },
]


async def _upgrade(url: str, headers: list[tuple[bytes, bytes]]) -> tuple[int, dict[str, Any]]:
    """The status and JSON error of a refused upgrade."""
    with pytest.raises(ConnectionRejected) as rejected, trio.fail_after(30):
        async with open_websocket_url(url, extra_headers=headers):
            pass
    return rejected.value.status_code, json.loads(rejected.value.body or b"{}")


async def test_the_upgrade_passes_the_apis_guard_and_the_kinds_scope(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server(api_tokens=TOKENS)
    url = _ws_url(server.api_url, "box-1", kind="shell")
    status, body = await _upgrade(url, [])
    assert status == 401
    bearer = [(b"Authorization", b"Bearer reader-token-0123456")]
    status, body = await _upgrade(url, bearer)
    assert (status, body["error"]["scope"]) == (403, "sessions:shell")
    status, body = await _upgrade(url, [(b"Authorization", b"Bearer web-token-0123456789")])
    assert status == 403
    assert "does not reach agent box-1" in body["error"]["message"]
    cross = [
        (b"Authorization", b"Bearer ops-token-0123456789"),
        (b"Origin", b"https://evil.example"),
    ]
    status, body = await _upgrade(url, cross)
    assert (status, body["error"]["code"]) == (403, "cross_origin")
    tunnel = _ws_url(server.api_url, "box-1", kind="tunnel", host="127.0.0.1", port=22)
    status, body = await _upgrade(tunnel, [(b"Authorization", b"Bearer ops-token-0123456789")])
    assert (status, body["error"]["scope"]) == (403, "tunnels:open")
    # Admitted (a browser's token comes as a subprotocol): the agent is not connected.
    subprotocols = ["monitoring-ws.channel.v1", "monitoring-ws.bearer.b3BzLXRva2VuLTAxMjM0NTY3ODk"]
    async with open_websocket_url(url, subprotocols=subprotocols) as ws:
        assert ws.subprotocol == "monitoring-ws.channel.v1"
        refused = await _control(ws)
    assert refused["code"] == "agent_not_connected"
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        listed = await http.get(
            "/api/recordings", headers={"Authorization": "Bearer ops-token-0123456789"}
        )
        assert listed.json() == {"recordings": []}
        denied = await http.get(
            "/api/recordings", headers={"Authorization": "Bearer web-token-0123456789"}
        )
        assert denied.status_code == 403
