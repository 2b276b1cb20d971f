"""GET /api/events: live server-sent events from a real server (agents connecting and
leaving, metrics, logs, commands), filters, resume with Last-Event-ID, scoped tokens."""

from __future__ import annotations

import json
from typing import Any

import httpx
import pytest
import trio
import trio.testing

from monitoring_ws.host.events import DROPPED, EventHub
from monitoring_ws.host.server import apply_reload
from monitoring_ws.host.telemetry import MemoryTelemetry, TelemetryBus
from monitoring_ws.protocol import LogEntry

from .conftest import SECRET, StartServer
from .gateway.agents import now_ms, open_agent
from .support.eventually import eventually
from .support.served import config_from_flat

# The API answers the same on both servers of its port (api_server).
pytestmark = pytest.mark.usefixtures("api_server")


async def read_events(http: httpx.AsyncClient, count: int, **params: Any) -> list[dict[str, Any]]:
    """The first ``count`` events of a stream (its id, type and data)."""
    headers = {}
    if "last" in params:
        headers["Last-Event-ID"] = str(params.pop("last"))
    found: list[dict[str, Any]] = []
    with trio.fail_after(10):
        async with http.stream("GET", "/api/events", params=params, headers=headers) as stream:
            assert stream.headers["content-type"].startswith("text/event-stream")
            event: dict[str, Any] = {}
            async for line in stream.aiter_lines():
                if line.startswith("id: "):
                    event["id"] = int(line[4:])
                elif line.startswith("event: "):
                    event["type"] = line[7:]
                elif line.startswith("data: "):
                    event["data"] = json.loads(line[6:])
                elif not line and event:
                    found.append(event)
                    event = {}
                    if len(found) == count:
                        return found
    return found


async def test_a_stream_follows_agents_telemetry_and_commands(
    start_server: StartServer, nursery: trio.Nursery
) -> None:
    running = await start_server()
    url = running.agent_urls[0]
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as http:
        everything: list[dict[str, Any]] = []

        async def watch(*, task_status: trio.TaskStatus[None]) -> None:
            task_status.started()
            everything.extend(await read_events(http, 6))

        async with trio.open_nursery() as watching:
            await watching.start(watch)
            # The stream is open before the agent comes.
            await eventually(lambda: running.running.events.subscribers != 0, timeout_s=5)
            async with open_agent(url, "ev-1") as agent, trio.open_nursery() as n:
                n.start_soon(agent.serve_commands)
                await agent.send(agent.session.metrics({"cpu": 1}, now_ms()))
                entry = LogEntry(now_ms(), "info", "hello", "app.log")
                await agent.send(agent.session.logs([entry], now_ms()))
                ping = {"command": "ping", "args": {}}
                assert (await http.post("/api/agents/ev-1/commands", json=ping)).status_code == 200
                n.cancel_scope.cancel()
        types = [event["type"] for event in everything]
        assert types[:3] == ["agent_connected", "metrics", "log"]
        assert types.count("command") >= 2  # sent, then succeeded
        assert everything[0]["data"]["agentId"] == "ev-1"
        assert everything[1]["data"]["values"] == {"cpu": 1}
        ended = [e["data"] for e in everything if e["type"] == "command"][-1]
        assert ended["state"] == "succeeded"
        ids = [event["id"] for event in everything]
        assert ids == sorted(ids)
        # Resume after the first event, filtered by type: what was missed comes again.
        again = await read_events(http, 1, last=ids[0], type="log")
        assert again[0]["id"] == ids[2]
        missing = await http.get("/api/events", params={"type": "nonsense"})
        assert missing.status_code == 400


async def test_a_token_sees_only_its_agents(start_server: StartServer) -> None:
    scoped = {"name": "web", "token": "w" * 20, "scopes": ["events:read"], "agents": ["web-*"]}
    running = await start_server(api_tokens=["a" * 20, scoped])
    url = running.agent_urls[0]
    headers = {"Authorization": f"Bearer {'w' * 20}"}
    async with httpx.AsyncClient(base_url=running.api_url, headers=headers, timeout=30) as http:
        async with open_agent(url, "db-1"), open_agent(url, "web-1"):
            pass
        seen = await read_events(http, 2, last=0)
        assert [(e["type"], e["data"]["agentId"]) for e in seen] == [
            ("agent_connected", "web-1"),
            ("agent_disconnected", "web-1"),
        ]
        reader = {"Authorization": f"Bearer {'a' * 20}"}
        assert (await http.get("/api/agents", headers=headers)).status_code == 403
        assert (await http.get("/api/agents", headers=reader)).status_code == 200


async def _flooded(hub: EventHub, events: int, size: int | None = None) -> list[Any]:
    """What a subscriber that never gets to run receives while ``events`` are published."""
    received: list[Any] = []

    async def consume() -> None:
        received.extend([item async for item in hub.subscribe()])

    async with trio.open_nursery() as nursery:
        nursery.start_soon(consume)
        await trio.testing.wait_all_tasks_blocked()
        assert hub.subscribers == 1
        for number in range(events):  # publishing never waits for a subscriber
            hub.publish("metrics", "a", {"n": number}, size=size)
    return received


async def test_a_slow_subscriber_is_dropped_not_waited_for() -> None:
    hub = EventHub(queue_limit=3)
    received = await _flooded(hub, 10)
    assert received == [DROPPED]  # it fell behind: its stream ends, it reconnects
    assert (hub.subscribers, hub.dropped) == (0, 1)


async def test_streams_end_when_the_server_stops(start_server: StartServer) -> None:
    running = await start_server()
    ended = trio.Event()
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        trio.open_nursery() as nursery,
    ):

        async def listen() -> None:
            async with http.stream("GET", "/api/events") as stream:
                async for _ in stream.aiter_lines():
                    pass
            ended.set()

        nursery.start_soon(listen)
        await eventually(lambda: running.running.events.subscribers != 0, timeout_s=5)
        running.stop()
        # It ends cleanly (listen() raises on a stream cut at Hypercorn's graceful timeout);
        # the deadline only catches a hang.
        with trio.fail_after(30):
            await ended.wait()


async def test_a_stream_whose_client_left_ends_before_its_next_keepalive(
    start_server: StartServer,
) -> None:
    """The server notices a client that closed its socket without waiting to write to it
    (a keepalive comes every 15 s): its subscription ends, on both servers."""
    running = await start_server()
    hub = running.running.events
    host, port = running.api_url.removeprefix("http://").rsplit(":", 1)
    client = await trio.open_tcp_stream(host, int(port))
    await client.send_all(f"GET /api/events HTTP/1.1\r\nHost: {host}\r\n\r\n".encode())
    await eventually(lambda: hub.subscribers == 1, timeout_s=10)
    await client.aclose()
    # Ten seconds only catch a hang: the keepalive that would otherwise reveal it is at 15.
    await eventually(lambda: hub.subscribers == 0, timeout_s=10, what="the stream ended")


def test_the_replay_ring_is_bounded_in_bytes() -> None:
    hub = EventHub(ring_bytes=8 << 20)
    bus = TelemetryBus(events=hub)
    sample = {"x": "y" * (1 << 20)}
    for number in range(40):  # 40 samples of 1 MiB from an agent that then leaves
        bus.metrics("big", number, sample, size=(1 << 20) + 100)
    assert hub.ring_held <= 8 << 20
    assert len(hub._ring) <= 8
    hub.publish("command", "other", {"state": "succeeded"})  # measured when not given
    assert hub._ring[-1].size > len('{"state":"succeeded"}')


async def test_a_subscriber_queue_is_bounded_in_bytes() -> None:
    hub = EventHub(queue_limit=1_000, queue_bytes=4 << 20)
    # Ten 1 MiB events, far fewer than queue_limit.
    assert await _flooded(hub, 10, size=1 << 20) == [DROPPED]
    # A client resuming from before them gets the newest that fit, not a drop.
    resumed = hub.subscribe(after=0)
    first = await resumed.__anext__()
    assert not isinstance(first, str)
    assert first.data["n"] >= 6
    await resumed.aclose()


def test_log_rings_are_bounded_per_agent_and_in_all() -> None:
    memory = MemoryTelemetry(200, log_ring_bytes=64 << 10, log_bytes=1 << 20)
    line = LogEntry(ts=1, level="info", message="z" * 10_000)
    memory.logs("one", [line] * 200)
    assert len(memory.recent_logs("one")) <= 7  # 64 KiB of 10 KB lines, not 200 of them
    for number in range(200):  # many agents, most of them gone now
        memory.logs(f"agent-{number}", [line] * 10)
    assert memory.held_log_bytes <= 1 << 20
    assert memory.recent_logs("agent-199")  # the latest writers keep theirs
    assert not memory.recent_logs("one")  # the longest silent lost theirs first


async def test_a_stream_ends_when_a_reload_removes_its_token(start_server: StartServer) -> None:
    kept, dropped = "k" * 32, "d" * 32
    running = await start_server(api_tokens=(kept, dropped))
    lines: list[str] = []
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        trio.open_nursery() as nursery,
    ):
        ended = trio.Event()

        async def listen() -> None:
            headers = {"Authorization": f"Bearer {dropped}"}
            async with http.stream("GET", "/api/events", headers=headers) as stream:
                lines.extend([line async for line in stream.aiter_lines()])
            ended.set()

        nursery.start_soon(listen)
        await eventually(lambda: running.running.events.subscribers != 0, timeout_s=5)
        config = config_from_flat({"master_secrets": (SECRET,), "api_tokens": [kept]})
        plugins = list(running.running.plugins.values())
        apply_reload(plugins, lambda: config, None, running.running.tokens)
        with trio.fail_after(5):  # at once, not at the next keepalive (15 s)
            await ended.wait()
        async with open_agent(running.agent_urls[0], "web-after"):
            pass
        assert "event: revoked" in lines
        assert not any("web-after" in line for line in lines)
        answer = await http.get("/api/agents", headers={"Authorization": f"Bearer {kept}"})
        assert answer.status_code == 200
        gone = await http.get("/api/agents", headers={"Authorization": f"Bearer {dropped}"})
        assert gone.status_code == 401
