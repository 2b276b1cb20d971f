"""Revocation (applied on SIGHUP without a restart) and a maximum session lifetime."""

from __future__ import annotations

import signal
from pathlib import Path

import httpx
import pytest
import trio

from monitoring_ws.configbase import ConfigError
from monitoring_ws.host.config import MonitoringConfig
from monitoring_ws.host.server import apply_reload
from monitoring_ws.protocol import CloseCode, derive_agent_key, parse_retry_after

from ..conftest import SECRET, StartServer
from ..support import processes
from ..support.eventually import eventually
from ..support.served import config_from_flat
from .agents import close_code, first_frame_close, open_agent
from .test_agent_endpoint import HELLO, signed

pytestmark = pytest.mark.usefixtures("agent_listener")  # both listeners


async def test_revoked_agents_are_refused_and_disconnected(start_server: StartServer) -> None:
    running = await start_server(revoked_agents=("agent-x",))
    url = running.agent_urls[0]
    code, _ = await first_frame_close(url, signed("auth", HELLO, agent_id="agent-x"))
    assert code == CloseCode.AUTH_FAILED
    async with open_agent(url, "agent-live") as live:
        config = config_from_flat({"master_secrets": (SECRET,), "revoked_agents": ("agent-live",)})
        apply_reload(list(running.running.plugins.values()), lambda: config)
        assert await close_code(live.ws) == CloseCode.AUTH_FAILED
    code, _ = await first_frame_close(url, signed("auth", HELLO, agent_id="agent-live"))
    assert code == CloseCode.AUTH_FAILED
    # Off the list again, the old key stays dead: only a new enrollment admits the id.
    config = config_from_flat({"master_secrets": (SECRET,), "revoked_agents": ()})
    apply_reload(list(running.running.plugins.values()), lambda: config)
    assert running.gateway.endpoint.revoked == frozenset()
    for agent_id in ("agent-x", "agent-live"):
        code, _ = await first_frame_close(url, signed("auth", HELLO, agent_id=agent_id))
        assert code == CloseCode.AUTH_FAILED
    async with open_agent(url, "agent-never-revoked") as other:
        assert other.ws.closed is None


async def test_a_bad_reload_changes_nothing(start_server: StartServer) -> None:
    running = await start_server(revoked_agents=("agent-x",))

    def broken() -> MonitoringConfig:
        raise ConfigError("monitoring.toml: unknown key carrier_pigeon in [server]")

    apply_reload(list(running.running.plugins.values()), broken)
    assert running.gateway.endpoint.revoked == {"agent-x"}


async def test_sessions_end_after_their_lifetime(start_server: StartServer) -> None:
    running = await start_server(max_session_s=1)
    async with open_agent(running.agent_urls[0], "agent-old") as agent:
        started = trio.current_time()
        assert await close_code(agent.ws) == CloseCode.GOING_AWAY
        assert trio.current_time() - started >= 0.8  # not before its lifetime (less a tenth)
        assert parse_retry_after(agent.ws.closed.reason or "") == 1  # type: ignore[union-attr]


async def test_sighup_applies_revocations_in_a_real_process(tmp_path: Path) -> None:
    port = processes.free_port()
    config = tmp_path / "gateway.toml"
    config.write_text("[gateway]\nrevoked_agents = []\n", encoding="utf-8")
    server = processes.server(tmp_path, port, "--config", str(config))
    await trio.to_thread.run_sync(server.start)
    try:
        url = f"ws://127.0.0.1:{port}/agent"
        async with open_agent(url, "agent-h") as agent:
            config.write_text('[gateway]\nrevoked_agents = ["agent-h"]\n', encoding="utf-8")
            server.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]
            assert await close_code(agent.ws) == CloseCode.AUTH_FAILED
        assert "1 agent(s) revoked, 1 open session(s) closed" in server.log.read_text()
    finally:
        await trio.to_thread.run_sync(server.stop)


async def test_sighup_reloads_tokens_secrets_and_log_level(tmp_path: Path) -> None:
    port = processes.free_port()
    config = tmp_path / "monitoring.toml"
    old, new = "old-token-" + "o" * 10, "new-token-" + "n" * 10

    def settings(token: str, secrets: str, level: str) -> str:
        return (
            f'[server]\napi_tokens = ["{token}"]\nlog_level = "{level}"\n'
            f"[plugins.websocket]\nmaster_secrets = [{secrets}]\n"
        )

    config.write_text(settings(old, f'"{SECRET}"', "info"), encoding="utf-8")
    server = processes.server(tmp_path, port, "--config", str(config))
    await trio.to_thread.run_sync(server.start)
    try:
        api, url = f"http://127.0.0.1:{port}", f"ws://127.0.0.1:{port}/agent"
        rotated = "a-new-master-secret"
        async with open_agent(url, "agent-stays") as agent, httpx.AsyncClient(base_url=api) as http:
            config.write_text(settings(new, f'"{rotated}", "{SECRET}"', "debug"), encoding="utf-8")
            server.popen.send_signal(signal.SIGHUP)  # type: ignore[union-attr]

            async def _done() -> bool:
                return (await http.get("/api/agents", headers=bearer(new))).status_code == 200

            await eventually(_done, timeout_s=10)
            assert (await http.get("/api/agents", headers=bearer(old))).status_code == 401
            assert agent.ws.closed is None  # nobody was dropped
            # A new agent key from the new current secret works; the old one still does.
            key = derive_agent_key(rotated, "agent-new")
            async with open_agent(url, "agent-new", key=key) as fresh:
                assert fresh.ws.closed is None
        log = server.log.read_text()
        assert "reloaded: 0 agent(s) revoked" in log
        assert "reloaded: 1 API token(s), log level debug" in log
    finally:
        await trio.to_thread.run_sync(server.stop)


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}
