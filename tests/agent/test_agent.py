"""The agent against a real server: streaming, built-in commands, reconnects, pinning."""

from __future__ import annotations

import itertools
import random
import socket
from collections.abc import Mapping
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio

from monitoring_ws.agent.backoff import AUTH_FAILED_FLOOR_S, Backoff
from monitoring_ws.agent.client import Agent
from monitoring_ws.agent.handlers import CommandContext, discover
from monitoring_ws.agent.main import build_agent
from monitoring_ws.agent.runner import MAX_WAITING_BYTES, CommandRunner
from monitoring_ws.agent.settings import (
    AgentSettings,
    SettingsError,
    hostname_agent_id,
    imds_instance_id,
    load_settings,
)
from monitoring_ws.host.serving.tls import certificate_fingerprint
from monitoring_ws.protocol import CloseCode, Command, derive_agent_key
from tests.support.served import Served as Running

from ..conftest import StartServer
from ..gateway.agents import SECRET
from ..support.eventually import eventually
from ..support.observe import connected


def settings_for(url: str, agent_id: str = "agent-1", **extra: Any) -> AgentSettings:
    return AgentSettings(
        url=url, agent_id=agent_id, key=derive_agent_key(SECRET, agent_id), **extra
    )


async def wait_for(condition: Any, timeout: float = 30) -> None:
    await eventually(condition, timeout_s=timeout)


async def command(http: httpx.AsyncClient, agent_id: str, name: str, **args: Any) -> dict[str, Any]:
    response = await http.post(
        f"/api/websocket/agents/{agent_id}/command", json={"command": name, "args": args}
    )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def test_agent_streams_and_answers_every_builtin(
    server: Running, http: httpx.AsyncClient, tmp_path: Path
) -> None:
    log_file = tmp_path / "app.log"
    log_file.write_text("old line, before the agent started\n")
    settings = settings_for(
        server.agent_urls[0],
        metrics_interval_s=0.2,
        log_files=(log_file,),
        log_batch_interval_s=0.1,
        allowed_commands=("echo hello", "uname", "uname re:-[a-z]"),
    )
    agent = build_agent(settings)
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        info = (await http.get("/api/websocket/agents/agent-1")).json()
        assert set(info["capabilities"]["commands"]) >= {
            "ping",
            "collect_metrics",
            "tail_log",
            "run",
        }

        async def has_metrics() -> bool:
            status = (await http.get("/api/websocket/agents/agent-1")).json()
            return status["metrics"] is not None

        await wait_for(has_metrics)
        metrics = (await http.get("/api/websocket/agents/agent-1")).json()["metrics"]["values"]
        assert {"cpu", "load", "memory", "swap", "disk", "netIo", "uptime", "processes"} <= set(
            metrics
        )

        with log_file.open("a") as handle:
            handle.write("first new line\nsecond new line\n")

        async def has_logs() -> bool:
            logs = (await http.get("/api/websocket/agents/agent-1/logs")).json()["entries"]
            return [e["message"] for e in logs if e["source"] == str(log_file)] == [
                "first new line",
                "second new line",
            ]

        await wait_for(has_logs)

        assert (await command(http, "agent-1", "ping"))["result"]["pong"] is True
        sample = await command(http, "agent-1", "collect_metrics")
        assert sample["ok"] is True
        assert sample["result"]["cpu"]["count"] >= 1
        tail = await command(http, "agent-1", "tail_log", path=str(log_file), lines=2)
        assert tail["result"]["lines"] == ["first new line", "second new line"]
        outside = await command(http, "agent-1", "tail_log", path="/etc/shadow")
        assert outside["ok"] is False
        assert outside["error"]["code"] == "not_allowed"
        echoed = await command(http, "agent-1", "run", command="echo hello")
        assert echoed["result"]["stdout"] == "hello\n"
        assert echoed["result"]["exitCode"] == 0
        assert (await command(http, "agent-1", "run", command="uname -s"))["ok"] is True
        refused = await command(http, "agent-1", "run", command="rm -rf /tmp/x")
        assert refused["ok"] is False
        assert refused["error"]["code"] == "not_allowed"
        nursery.cancel_scope.cancel()


async def test_run_refuses_everything_without_an_allow_list(
    server: Running, http: httpx.AsyncClient
) -> None:
    agent = build_agent(settings_for(server.agent_urls[0], "no-list"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        refused = await command(http, "no-list", "run", command="echo hello")
        assert refused["error"]["code"] == "not_allowed"
        nursery.cancel_scope.cancel()


async def test_a_command_id_runs_once(tmp_path: Path) -> None:
    calls: list[Mapping[str, Any]] = []

    async def counting(args: Mapping[str, Any], context: CommandContext) -> int:
        calls.append(args)
        await trio.sleep(0.05)
        return len(calls)

    runner = CommandRunner(settings_for("ws://127.0.0.1:1/agent"), {"count": counting})
    command = Command("c-1", "count", {}, 1000)
    async with trio.open_nursery() as nursery:
        first: list[Any] = []

        async def execute() -> None:
            first.append(await runner.execute(command))

        nursery.start_soon(execute)
        await trio.sleep(0.01)
        assert await runner.execute(command) is None  # still running: it will answer once
    again = await runner.execute(command)
    assert first[0] == again
    assert len(calls) == 1


async def test_command_timeout_and_handler_errors(autojump_clock: trio.testing.MockClock) -> None:
    async def slow(args: Mapping[str, Any], context: CommandContext) -> None:
        await trio.sleep(60)

    async def broken(args: Mapping[str, Any], context: CommandContext) -> None:
        raise RuntimeError("bug in a plugin")

    runner = CommandRunner(settings_for("ws://127.0.0.1:1/agent"), {"slow": slow, "broken": broken})
    timed_out = await runner.execute(Command("c-1", "slow", {}, 500))
    assert timed_out is not None
    assert timed_out.error is not None
    assert timed_out.error.code == "timeout"
    failed = await runner.execute(Command("c-2", "broken", {}, 500))
    assert failed is not None
    assert failed.error is not None
    assert failed.error.code == "handler_error"
    unknown = await runner.execute(Command("c-3", "nope", {}, 500))
    assert unknown is not None
    assert unknown.error is not None
    assert unknown.error.code == "unknown_command"


def test_backoff_full_jitter_cap_reset_and_hints() -> None:
    backoff = Backoff(base_s=1, cap_s=60, rng=random.Random(1))
    delays = [backoff.next_delay(1006) for _ in range(12)]
    ceilings = [min(60, 2**n) for n in range(12)]
    assert all(0 <= d <= c for d, c in zip(delays, ceilings, strict=True))
    assert max(delays[8:]) <= 60
    backoff.stable()
    assert backoff.next_delay(1006) <= 1
    hinted = backoff.next_delay(1001, "retry-after=5; server shutting down")
    assert 5 <= hinted <= 7.5
    assert backoff.next_delay(4429, "retry-after=30; too many attempts") >= 30
    assert backoff.next_delay(CloseCode.AUTH_FAILED, "authentication failed") >= AUTH_FAILED_FLOOR_S


async def test_reconnect_timing_follows_the_backoff(autojump_clock: trio.testing.MockClock) -> None:
    """Against a port nobody listens on: attempts spread out, capped, never stuck."""
    with trio.socket.socket() as probe:
        await probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    agent = Agent(
        settings_for(f"ws://127.0.0.1:{port}/agent", backoff_cap_s=8),
        CommandRunner(settings_for("ws://127.0.0.1:1/agent"), {}),
    )
    agent.backoff.rng = random.Random(3)
    attempts: list[float] = []
    original = agent.connect_once

    async def counted() -> tuple[int | None, str]:
        attempts.append(trio.current_time())
        return await original()

    agent.connect_once = counted  # type: ignore[method-assign]
    with trio.move_on_after(120):
        await agent.run()
    gaps = [b - a for a, b in itertools.pairwise(attempts)]
    assert len(attempts) > 10  # kept trying, for two virtual minutes
    assert max(gaps) <= 8 + 0.5  # the cap holds


async def test_reconnects_after_the_server_restarts(start_server: StartServer) -> None:
    first = await start_server(shutdown_retry_after_s=0)
    port = first.api_url.rsplit(":", 1)[1]
    agent = build_agent(settings_for(first.agent_urls[0], "survivor", backoff_base_s=0.1))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        await agent.connected.wait()
        first.stop()
        with trio.fail_after(5):
            await first.gateway.closed.wait()
        # A clean stop: 1001, not 1006 (the stopped server's own count: no API to ask).
        assert first.gateway.stats["closed_1001"] == 1
        second = await start_server(listen=f"127.0.0.1:{port}")
        await eventually(partial(connected, second.api_url, "survivor"), timeout_s=10)
        nursery.cancel_scope.cancel()


async def test_pinned_certificate(start_server: StartServer, tmp_path: Path) -> None:
    running = await start_server(tls_self_signed=True, state_dir=tmp_path / "tls-state")
    pin = certificate_fingerprint(tmp_path / "tls-state" / "tls" / "cert.pem")
    good = build_agent(settings_for(running.agent_urls[0], "pinned", cert_sha256=pin))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(good.run)
        with trio.fail_after(10):
            await good.connected.wait()
        nursery.cancel_scope.cancel()
    wrong = build_agent(settings_for(running.agent_urls[0], "pinned", cert_sha256="0" * 64))
    code, reason = await wrong.connect_once()
    assert code is None
    assert "not the pinned one" in reason
    unpinned = build_agent(settings_for(running.agent_urls[0], "pinned", connect_timeout_s=2))
    code, reason = await unpinned.connect_once()  # system trust: a self-signed cert fails
    assert code is None


def test_settings_errors_say_how_to_fix(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in ("URL", "SECRET", "AGENT_KEY", "AGENT_ID", "CERT_SHA256"):
        monkeypatch.delenv(f"MONITORING_WS_{variable}", raising=False)
    seed = tmp_path / "agent.json"
    seed.write_text('{"wsApiUrl": "wss://{public_ip}/agent", "wsSecret": "s"}')
    with pytest.raises(SettingsError, match="placeholder"):
        load_settings(seed, agentId="a")
    seed.write_text('{"wsApiUrl": "wss://203.0.113.9/agent", "wsSecret": "s"}')
    loaded = load_settings(seed, agentId="i-0abc")
    assert loaded.key == derive_agent_key("s", "i-0abc")
    assert "key=" not in repr(loaded)
    with pytest.raises(SettingsError, match="--insecure"):
        load_settings(None, wsApiUrl="ws://203.0.113.9/agent", wsSecret="s", agentId="a")
    assert load_settings(None, wsApiUrl="ws://127.0.0.1:4000/agent", wsSecret="s", agentId="a")
    with pytest.raises(SettingsError, match="no key"):
        load_settings(None, wsApiUrl="wss://h/agent", agentId="a")
    with pytest.raises(SettingsError, match="64 hex"):
        load_settings(None, wsApiUrl="wss://h/agent", wsSecret="s", agentId="a", wsCertSha256="x")
    key = derive_agent_key("s", "a").hex()
    preferred = load_settings(
        None, wsApiUrl="wss://h/agent", wsSecret="other", wsAgentKey=key, agentId="a"
    )
    assert preferred.key.hex() == key


def test_builtin_handlers_are_found_through_entry_points() -> None:
    assert {"ping", "collect_metrics", "tail_log", "run"} <= set(discover())


def test_agent_id_defaults_to_the_ec2_instance_id(
    imds: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("URL", "SECRET", "AGENT_KEY", "AGENT_ID", "CERT_SHA256"):
        monkeypatch.delenv(f"MONITORING_WS_{variable}", raising=False)
    assert imds_instance_id(imds) == "i-fake"
    settings = load_settings(None, wsApiUrl="wss://h/agent", wsSecret="s", imdsEndpoint=imds)
    assert settings.agent_id == "i-fake"
    assert settings.instance_id == "i-fake"
    assert settings.key == derive_agent_key("s", "i-fake")


def test_agent_id_falls_back_to_the_hostname_when_imds_is_silent() -> None:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        port = closed.getsockname()[1]
    assert imds_instance_id(f"http://127.0.0.1:{port}", timeout_s=1) is None
    settings = load_settings(
        None, wsApiUrl="wss://h/agent", wsSecret="s", imdsEndpoint=f"http://127.0.0.1:{port}"
    )
    assert settings.agent_id == hostname_agent_id()
    assert settings.instance_id is None
    explicit = load_settings(
        None, wsApiUrl="wss://h/agent", wsSecret="s", agentId="i-0abc123def4567890"
    )
    assert explicit.instance_id == "i-0abc123def4567890"


async def test_run_output_is_capped_without_holding_it_all(tmp_path: Path) -> None:
    script = tmp_path / "loud.sh"
    script.write_text("#!/bin/sh\nyes | head -c 3000000\necho oops >&2\nexit 3\n")
    script.chmod(0o755)
    settings = settings_for(
        "ws://127.0.0.1:1/agent", allowed_commands=(str(script),), output_cap_bytes=1000
    )
    runner = CommandRunner(settings, discover())
    result = await runner.execute(Command("c-loud", "run", {"command": str(script)}, 10_000))
    assert result is not None
    assert result.ok is True
    assert result.result["exitCode"] == 3
    assert result.result["stdout"] == "y\n" * 500
    assert result.result["stderr"] == "oops\n"
    assert result.result["truncated"] is True


async def test_commands_waiting_for_a_slot_are_bounded_in_bytes() -> None:
    release = trio.Event()
    started: list[str] = []

    async def hold(args: Mapping[str, Any], context: CommandContext) -> int:
        started.append(str(args["n"]))
        await release.wait()
        return 1

    runner = CommandRunner(
        settings_for("ws://127.0.0.1:1/agent", command_concurrency=1), {"hold": hold}
    )
    results: dict[int, Any] = {}
    big = "x" * 900_000  # 150 of these waited in memory: +130 MB

    async def execute(number: int) -> None:
        command = Command(f"c-{number}", "hold", {"n": number, "pad": big}, 60_000)
        results[number] = await runner.execute(command)

    async with trio.open_nursery() as nursery:
        for number in range(150):
            nursery.start_soon(execute, number)
            await trio.testing.wait_all_tasks_blocked()
        busy = [n for n, result in results.items() if result.error.code == "busy"]
        waiting = 150 - 1 - len(busy)
        assert waiting * 900_000 <= MAX_WAITING_BYTES  # what waits is bounded...
        assert len(busy) >= 150 - 1 - MAX_WAITING_BYTES // 900_000  # ...the rest answered busy
        release.set()
    assert started[0] == "0"
    assert all(results[n].ok for n in range(1 + waiting))  # the waiting ones ran, in turn
    # A command refused busy was not journalled or remembered: sent again, it runs.
    again = await runner.execute(Command(f"c-{busy[0]}", "hold", {"n": busy[0]}, 60_000))
    assert again is not None
    assert again.ok
