"""What the dashboard (/ui) needs of the server: its files (no token, strict CSP, the
browser rules), the fleet summary, the spool read back by time, agents' sessions, and
stale / active events. The page itself is driven in a browser by tests/ui/."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.gateway.liveness import ConnectionHistory, SessionSpan, Staleness
from monitoring_ws.host.api.ui import POLICY
from monitoring_ws.host.summary import summarize

from .conftest import StartServer
from .gateway.agents import now_ms, open_agent
from .support.eventually import eventually
from .test_events import read_events

TOKEN = "a-dashboard-test-token-0123456789"


async def test_the_files_need_no_token_and_carry_a_strict_policy(start_server: StartServer) -> None:
    running = await start_server(api_tokens=(TOKEN,))
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as http:
        page = await http.get("/ui")
        assert page.status_code == 200
        assert page.headers["content-type"].startswith("text/html")
        assert page.headers["content-security-policy"] == POLICY
        assert "script-src 'self';" in POLICY
        assert "unsafe" not in POLICY
        assert page.headers["x-content-type-options"] == "nosniff"
        assert "set-cookie" not in page.headers
        assert '<script type="module" src="/ui/app.js">' in page.text
        assert "<script>" not in page.text
        assert " style=" not in page.text
        script = await http.get("/ui/app.js")
        assert script.headers["content-type"].startswith("text/javascript")
        missing = await http.get("/ui/nothing.js")
        assert missing.status_code == 404
        assert missing.json()["error"]["code"] == "not_found"
        assert (await http.get("/ui/..%2Fapi.js")).status_code == 404
        # The data still needs the token; the browser rules hold for the files too.
        assert (await http.get("/api/agents")).status_code == 401
        foreign = await http.get("/ui", headers={"Sec-Fetch-Site": "cross-site"})
        assert foreign.status_code == 403


async def test_without_tokens_the_files_answer_only_this_machines_names(
    start_server: StartServer,
) -> None:
    running = await start_server()
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as http:
        assert (await http.get("/ui")).status_code == 200
        rebound = await http.get("/ui", headers={"Host": "attacker.example"})
        assert rebound.status_code == 403
        assert rebound.json()["error"]["code"] == "host_not_allowed"


async def test_the_fleet_summary_and_the_spool_by_time(start_server: StartServer) -> None:
    running = await start_server(commit_interval_ms=20)
    values = {"cpu": {"percent": 12.5}, "memory": {"percent": 40.0}, "load": [0.5, 0.4, 0.3]}
    values["disk"] = [{"mountpoint": "/", "percent": 70.0}, {"percent": 91.0}]
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        open_agent(running.agent_urls[0], "sum-1") as agent,
    ):
        started = now_ms()
        await agent.send(agent.session.metrics(values, now_ms()))
        await agent.send(agent.session.metrics({"cpu": 99}, now_ms()))

        async def latest() -> dict[str, Any] | None:
            listed = (await http.get("/api/agents", params={"metrics": "summary"})).json()
            summary: dict[str, Any] | None = listed["agents"][0]["metrics"]
            return summary if summary is not None and summary["cpu"] == 99.0 else None

        summary = await eventually(latest, timeout_s=5, what="the second sample summarised")
        assert summary == {
            "ts": summary["ts"],
            "cpu": 99.0,
            "memory": None,
            "disk": None,
            "load": None,
        }
        plain = (await http.get("/api/agents")).json()["agents"][0]
        assert "metrics" not in plain
        bad = await http.get("/api/agents", params={"metrics": "all"})
        assert bad.status_code == 400
        # The spool, read back from a time on and by kind.
        with trio.fail_after(5):
            while True:
                page = await http.get(
                    "/api/websocket/telemetry",
                    params={"agentId": "sum-1", "type": "metrics", "since": started - 1000},
                )
                if len(page.json()["items"]) == 2:
                    break
                await trio.sleep(0.02)
        assert page.json()["items"][0]["envelope"]["payload"] == values
        later = await http.get("/api/websocket/telemetry", params={"since": now_ms() + 60_000})
        assert later.json()["items"] == []
        for wrong in ({"type": "command"}, {"since": "yesterday"}):
            assert (await http.get("/api/websocket/telemetry", params=wrong)).status_code == 400


async def test_an_agents_sessions_newest_first(start_server: StartServer) -> None:
    running = await start_server()
    url = running.agent_urls[0]
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as http:
        async with open_agent(url, "hist-1"):
            pass
        async with open_agent(url, "hist-1"):
            with trio.fail_after(5):
                while True:
                    answer = (await http.get("/api/websocket/agents/hist-1/connections")).json()
                    sessions = answer["sessions"]
                    if len(sessions) == 2 and sessions[1]["disconnectedAt"] is not None:
                        break
                    await trio.sleep(0.02)
        assert sessions[0]["disconnectedAt"] is None  # the open one first
        assert sessions[1]["closeCode"] in {None, 1000, 1001}
        assert sessions[0]["connectedAt"] >= sessions[1]["connectedAt"]
        assert sessions[0]["address"].startswith("127.0.0.1:")
        unknown = await http.get("/api/websocket/agents/nobody/connections")
        assert unknown.json() == {"agentId": "nobody", "sessions": []}
        assert (await http.get("/api/websocket/agents/bad id/connections")).status_code == 400


async def test_a_silent_agent_turns_stale_and_active_again(start_server: StartServer) -> None:
    running = await start_server(heartbeat_interval_ms=300)
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        open_agent(running.agent_urls[0], "quiet-1") as agent,
    ):
        types = "agent_stale,agent_active"
        async with trio.open_nursery() as nursery:
            found: list[dict[str, object]] = []

            async def watch() -> None:
                found.extend(await read_events(http, 2, type=types, agentId="quiet-1"))

            nursery.start_soon(watch)
            with trio.fail_after(5):  # silent for two intervals: stale, and listed so
                while not found:
                    listed = (await http.get("/api/agents")).json()["agents"][0]
                    if listed["details"]["websocket"]["stale"]:
                        break
                    await trio.sleep(0.05)
            await agent.send(agent.session.metrics({"cpu": 1}, now_ms()))
        assert [event["type"] for event in found] == ["agent_stale", "agent_active"]
        assert found[0]["data"]["agentId"] == "quiet-1"  # type: ignore[index]
        listed = (await http.get("/api/agents")).json()["agents"][0]
        assert listed["details"]["websocket"]["stale"] is False


def test_staleness_reports_each_change_once() -> None:
    watch = Staleness(after_ms=100)
    assert watch.scan(1_000, {"a": 950, "b": 850}) == (["b"], [])
    assert watch.scan(1_050, {"a": 950, "b": 850}) == (["a"], [])  # b already said
    assert watch.scan(1_100, {"a": 1_090}) == ([], ["a"])  # b left: forgotten silently
    assert watch.stale == set()


def test_connection_history_keeps_the_last_sessions() -> None:
    history = ConnectionHistory(keep=2)
    for index in range(3):
        history.opened("a", SessionSpan(f"s{index}", "127.0.0.1:1", "local", index))
    history.closed("a", "s1", 10, 1001)
    history.closed("a", "s0", 11, 1000)  # no longer kept: nothing to do
    assert [s["sessionId"] for s in history.of("a")] == ["s2", "s1"]
    assert history.of("a")[1]["closeCode"] == 1001
    assert history.of("b") == []


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ({}, (None, None, None, None)),
        ({"cpu": 5, "memory": 6.5, "disk": 7, "load": 0.25}, (5.0, 6.5, 7.0, 0.25)),
        ({"cpu": {"percent": 1}, "disk": [], "load": []}, (1.0, None, None, None)),
        (
            {"cpu": True, "memory": "50", "disk": [{"percent": "x"}, {"percent": 3}]},
            (None, None, 3.0, None),
        ),
    ],
)
def test_summaries_read_what_they_recognise(
    values: dict[str, object], expected: tuple[float | None, ...]
) -> None:
    summary = summarize(1, values)
    assert (summary["cpu"], summary["memory"], summary["disk"], summary["load"]) == expected


async def test_a_fleet_stream_carries_summaries_not_samples(start_server: StartServer) -> None:
    running = await start_server()
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        trio.open_nursery() as nursery,
    ):
        found: list[dict[str, object]] = []

        async def watch() -> None:
            found.extend(await read_events(http, 1, type="metrics", metrics="summary"))

        nursery.start_soon(watch)
        # The stream is open before the agent sends.
        await eventually(lambda: running.running.events.subscribers != 0, timeout_s=5)
        async with open_agent(running.agent_urls[0], "sum-2") as agent:
            sample = {"cpu": {"percent": 7.5}, "memory": {"percent": 30}, "extra": "x" * 500}
            await agent.send(agent.session.metrics(sample, now_ms()))
            await eventually(lambda: bool(found), timeout_s=5)
    data = found[0]["data"]
    assert isinstance(data, dict)
    assert "values" not in data
    assert data["summary"]["cpu"] == 7.5  # type: ignore[index]
    assert data["summary"]["memory"] == 30.0  # type: ignore[index]
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        bad = await http.get("/api/events", params={"metrics": "all"})
    assert bad.status_code == 400
