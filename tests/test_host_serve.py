"""``serve --config monitoring.toml``: the host runs its enabled plugins (real processes)."""

from __future__ import annotations

import signal
import subprocess
from pathlib import Path

import httpx
import trio

from monitoring_ws.protocol import CloseCode

from .conftest import SECRET
from .gateway.agents import close_code, open_agent
from .support.processes import isolated_env, run_cli, server_process

CONFIG = f"""
[server]
listen = "127.0.0.1:0"

[plugins.websocket]
enabled = true
master_secrets = ["{SECRET}"]

[transports]
order = ["websocket", "ssm"]
"""


def test_the_host_runs_the_websocket_plugin(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.toml"
    config.write_text(CONFIG)
    with server_process("--config", str(config), env=isolated_env(), cwd=tmp_path) as (
        process,
        api,
        ws,
    ):

        async def scenario() -> None:
            async with open_agent(ws, "hosted") as agent:
                async with httpx.AsyncClient(base_url=api) as http:
                    listing = (await http.get("/api/agents")).json()
                    assert listing["transports"] == ["websocket"]
                    assert listing["agents"][0]["agentId"] == "hosted"
                    assert listing["agents"][0]["connected"] is True
                process.send_signal(signal.SIGTERM)
                assert await close_code(agent.ws, timeout=10) == CloseCode.GOING_AWAY

        trio.run(scenario)
        assert process.wait(timeout=15) == 0


def run_serve(tmp_path: Path, config: str, **env: str) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "monitoring.toml"
    path.write_text(config)
    return run_cli("serve", "--config", str(path), cwd=tmp_path, env=isolated_env(**env))


def test_nothing_enabled_is_a_clear_error(tmp_path: Path) -> None:
    result = run_serve(tmp_path, CONFIG, MONITORING_WS_PLUGIN_WEBSOCKET="off")
    assert result.returncode == 78
    assert "no transport is enabled" in result.stderr


def test_an_enabled_broken_plugin_stops_start_up(tmp_path: Path) -> None:
    dist = tmp_path / "site" / "broken_plugin-0.1.dist-info"
    dist.mkdir(parents=True)
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: broken-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text("[monitoring_ws.plugins]\nbroken = gone_module:Plugin\n")
    config = CONFIG + "\n[plugins.broken]\nenabled = true\n"
    result = run_serve(tmp_path, config, PYTHONPATH=str(tmp_path / "site"))
    assert result.returncode == 78
    assert "plugin 'broken'" in result.stderr
    assert "failed to load" in result.stderr
    assert "Traceback" not in result.stderr
