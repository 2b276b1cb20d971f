"""The ``ack`` extension against a real server: numbered messages stored once, acknowledged
after the commit, duplicates dropped, marks kept across a restart."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.protocol import (
    FEATURE_ACK,
    AckReceived,
    CloseCode,
    Delivery,
    MessageType,
)
from tests.support.served import Served as Running

from ..conftest import StartServer
from ..support.eventually import eventually
from .agents import TestAgent, close_code, now_ms, open_agent

pytestmark = pytest.mark.usefixtures("agent_listener")  # both listeners


async def _acked(agent: TestAgent, seq: int, timeout: float = 5) -> Delivery:
    """Read until an ack covering ``seq`` arrives."""
    with trio.fail_after(timeout):
        while True:
            for event in await agent.events():
                if isinstance(event, AckReceived) and event.ack.seq >= seq:
                    return event.ack


def _numbered(agent: TestAgent, seq: int, values: dict[str, Any], stream: str = "s-1") -> str:
    payload = {**values, "delivery": {"stream": stream, "seq": seq}}
    return agent.session.message(MessageType.METRICS, payload, now_ms())


async def _spooled(http: httpx.AsyncClient, agent_id: str) -> list[dict[str, Any]]:
    response = await http.get("/api/websocket/telemetry", params={"agentId": agent_id})
    assert response.status_code == 200, response.text
    items: list[dict[str, Any]] = response.json()["items"]
    return items


async def test_numbered_messages_are_stored_once_and_acknowledged(
    server: Running, http: httpx.AsyncClient
) -> None:
    url = server.agent_urls[0]
    async with open_agent(url, "acker", features=(FEATURE_ACK,)) as agent:
        assert FEATURE_ACK in agent.session.reply.features  # type: ignore[union-attr]
        for seq in (1, 2, 2, 1, 3):  # re-sends, each signed afresh with a new nonce
            await agent.send(_numbered(agent, seq, {"cpu": seq}))
        ack = await _acked(agent, 3)
        assert ack == Delivery("s-1", 3)
        # A heartbeat's answer repeats what is stored.
        await agent.send(agent.session.heartbeat(now_ms()))
        assert await _acked(agent, 3) == Delivery("s-1", 3)
    items = await _spooled(http, "acker")
    assert [item["envelope"]["payload"]["cpu"] for item in items] == [1, 2, 3]
    status = (await http.get("/api/websocket/agents/acker")).json()
    assert status["metrics"]["values"] == {"cpu": 3}  # the number is not a metric


async def test_a_new_stream_is_counted_afresh(server: Running, http: httpx.AsyncClient) -> None:
    async with open_agent(server.agent_urls[0], "reborn", features=(FEATURE_ACK,)) as agent:
        await agent.send(_numbered(agent, 5, {"n": "old"}, stream="s-old"))
        await _acked(agent, 5)
        await agent.send(_numbered(agent, 1, {"n": "new"}, stream="s-new"))
        assert await _acked(agent, 1) == Delivery("s-new", 1)
    assert [i["envelope"]["payload"]["n"] for i in await _spooled(http, "reborn")] == [
        "old",
        "new",
    ]


async def test_a_malformed_number_closes_with_4400(server: Running) -> None:
    async with open_agent(server.agent_urls[0], "garbled", features=(FEATURE_ACK,)) as agent:
        payload = {"cpu": 1, "delivery": {"stream": "s-1", "seq": 0}}
        await agent.send(agent.session.message(MessageType.METRICS, payload, now_ms()))
        assert await close_code(agent.ws) == CloseCode.MALFORMED


async def test_without_the_feature_delivery_is_just_a_member(
    server: Running, http: httpx.AsyncClient
) -> None:
    async with open_agent(server.agent_urls[0], "plain") as agent:
        assert agent.session.reply.features == ()  # type: ignore[union-attr]
        for _ in range(2):  # not numbered for this server: both are kept
            await agent.send(_numbered(agent, 1, {"cpu": 1}))
        await agent.send(agent.session.heartbeat(now_ms()))
        await agent.events()  # the heartbeat's answer: everything before it was handled

    async def _done() -> bool:
        return len(await _spooled(http, "plain")) >= 2

    await eventually(_done, timeout_s=5)  # the next commit stores both
    assert len(await _spooled(http, "plain")) == 2


async def test_marks_survive_a_restart_and_greet_the_agent(
    start_server: StartServer, tmp_path: Path
) -> None:
    state = tmp_path / "kept-state"
    first = await start_server(state_dir=state)
    async with open_agent(first.agent_urls[0], "steady", features=(FEATURE_ACK,)) as agent:
        for seq in (1, 2):
            await agent.send(_numbered(agent, seq, {"n": seq}))
        await _acked(agent, 2)
    first.stop()
    await first.gateway.closed.wait()
    second = await start_server(state_dir=state)
    async with open_agent(second.agent_urls[0], "steady", features=(FEATURE_ACK,)) as agent:
        # Right after the handshake the server says what it already has.
        assert await _acked(agent, 2) == Delivery("s-1", 2)
        for seq in (1, 2, 3):
            await agent.send(_numbered(agent, seq, {"n": seq}))
        await _acked(agent, 3)
    async with httpx.AsyncClient(base_url=second.api_url) as http:
        assert [i["envelope"]["payload"]["n"] for i in await _spooled(http, "steady")] == [
            1,
            2,
            3,
        ]
