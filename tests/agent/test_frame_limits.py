"""Results fit the frame: a 5 MiB output arrives trimmed, a frame the server refuses twice
is replaced, and telemetry never stops behind an oversized message."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.agent.main import build_agent
from monitoring_ws.protocol import DEFAULT_MAX_FRAME_VALUES, AuthReply, CloseCode
from tests.support.served import Served as Running

from ..conftest import StartServer
from ..gateway.agents import now_ms, open_agent
from ..support.eventually import eventually
from ..support.observe import counters
from .test_agent import command, settings_for, wait_for


def loud_script(tmp_path: Path, megabytes: int) -> Path:
    script = tmp_path / "loud.sh"
    script.write_text(f"#!/bin/sh\nhead -c {megabytes << 20} /dev/zero | tr '\\0' x\n")
    script.chmod(0o755)
    return script


async def latest_metrics_ts(http: httpx.AsyncClient, agent_id: str) -> int:
    status = (await http.get(f"/api/websocket/agents/{agent_id}")).json()
    return int((status.get("metrics") or {}).get("ts", 0))


async def test_a_5_mib_output_arrives_trimmed(
    server: Running, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    script = loud_script(tmp_path, 5)
    settings = settings_for(
        server.agent_urls[0],
        "agent-loud",
        allowed_commands=(str(script),),
        output_cap_bytes=5 << 20,  # the agent keeps it all; the frame cannot
        metrics_interval_s=0.2,
        state_dir=tmp_path / "agent",
    )
    agent = build_agent(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        body = await command(http, "agent-loud", "run", command=str(script))
        assert body["ok"] is True, body
        result = body["result"]
        assert result["truncated"] is True
        assert result["originalBytes"] > 5 << 20
        assert 900_000 < len(result["stdout"]) < 1 << 20
        assert set(result["stdout"]) == {"x"}
        # The connection stayed up and metrics keep coming.
        assert agent.connected.is_set()
        seen = await latest_metrics_ts(http, "agent-loud")

        async def more_metrics() -> bool:
            return await latest_metrics_ts(http, "agent-loud") > seen

        await wait_for(more_metrics)
        nursery.cancel_scope.cancel()
    assert (await counters(server.api_url))["closed_1009"] == 0


async def test_a_frame_refused_twice_is_replaced(
    start_server: StartServer,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A server (or proxy) that takes less than it announces: the agent lowers its limit,
    and a message refused twice becomes a small error record; nothing loops for ever."""
    running = await start_server(max_frame_bytes=64 << 10)
    original = AuthReply.from_payload.__func__  # type: ignore[attr-defined]

    def announces_nothing(cls: type[AuthReply], payload: dict[str, object]) -> AuthReply:
        return original(cls, {k: v for k, v in payload.items() if k != "maxFrameBytes"})

    monkeypatch.setattr(AuthReply, "from_payload", classmethod(announces_nothing))
    script = loud_script(tmp_path, 1)
    settings = settings_for(
        running.agent_urls[0],
        "agent-cut",
        allowed_commands=(str(script),),
        output_cap_bytes=200_000,
        metrics_interval_s=0.2,
        backoff_base_s=0.05,
        backoff_cap_s=0.1,
        state_dir=tmp_path / "agent",
    )
    agent = build_agent(settings)
    async with (
        httpx.AsyncClient(base_url=running.api_url, timeout=30) as http,
        trio.open_nursery() as nursery,
    ):
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        with caplog.at_level(logging.WARNING):
            accepted = await http.post(
                "/api/websocket/agents/agent-cut/command",
                json={"command": "run", "args": {"command": str(script)}, "wait": False},
            )
            assert accepted.status_code == 202, accepted.text
            location = accepted.headers["Location"]
            record: dict[str, Any] = {}

            async def finished() -> bool:
                record.update((await http.get(location)).json())
                return record["state"] in {"succeeded", "failed"}

            await wait_for(finished, timeout=20)
        # Through the reconnects the answer is the result trimmed below the lowered limit,
        # or the small error record that replaced it; never nothing, never a loop.
        result = record["result"]
        if result["ok"]:
            assert result["result"]["truncated"] is True
        else:
            assert result["error"]["code"] == "result_undeliverable"
        assert (await counters(running.api_url))["closed_1009"] >= 1
        assert "agent-cut with 1009" in caplog.text  # the server says who it refused
        seen = await latest_metrics_ts(http, "agent-cut")

        async def more_metrics() -> bool:
            return await latest_metrics_ts(http, "agent-cut") > seen

        await wait_for(more_metrics)
        nursery.cancel_scope.cancel()


async def test_the_server_reports_a_frame_hypercorn_dropped(
    server: Running, caplog: pytest.LogCaptureFixture
) -> None:
    async with open_agent(server.agent_urls[0], "agent-huge") as agent:
        with caplog.at_level(logging.WARNING):
            await agent.send(agent.session.metrics({"blob": "x" * (2 << 20)}, now_ms()))
            await eventually(lambda: agent.ws.closed is not None, timeout_s=5)
    assert agent.ws.closed.code == CloseCode.MESSAGE_TOO_BIG
    assert "closing agent-huge with 1009" in caplog.text
    assert (await counters(server.api_url))["closed_1009"] == 1


async def test_an_output_of_many_commas_arrives_trimmed_to_the_value_limit(
    server: Running, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    """CSV: every comma counts as a JSON value where the server counts them (before it
    parses): the agent trims the result to the value limit instead of being refused."""
    script = tmp_path / "csv.sh"
    script.write_text("#!/bin/sh\nhead -c 300000 /dev/zero | tr '\\0' ,\n")
    script.chmod(0o755)
    settings = settings_for(
        server.agent_urls[0],
        "agent-csv",
        allowed_commands=(str(script),),
        state_dir=tmp_path / "agent",
    )
    agent = build_agent(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        body = await command(http, "agent-csv", "run", command=str(script))
        assert body["ok"] is True, body
        result = body["result"]
        assert result["truncated"] is True
        assert 10_000 < len(result["stdout"]) <= DEFAULT_MAX_FRAME_VALUES
        assert (await counters(server.api_url))["closed_1009"] == 0  # trimmed before it was sent
        nursery.cancel_scope.cancel()


async def test_a_command_of_too_many_values_is_refused_by_the_server(
    server: Running, http: httpx.AsyncClient
) -> None:
    async with open_agent(server.agent_urls[0], "agent-v") as agent:
        body = {"command": "ping", "args": {"list": [0] * 70_000}}
        answer = await http.post("/api/websocket/agents/agent-v/command", json=body)
        assert answer.status_code == 413, answer.text
        assert "JSON values" in answer.json()["error"]["message"]
        assert agent.ws.closed is None
