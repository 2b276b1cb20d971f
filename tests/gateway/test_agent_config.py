"""Agent configuration files: from the CLI and from the API, with IMDS and without."""

from __future__ import annotations

import json
import socket
import subprocess
from pathlib import Path

import httpx
import pytest

from monitoring_ws.agent.settings import load_settings
from monitoring_ws.host.serving.tls import certificate_fingerprint, ensure_self_signed
from monitoring_ws.protocol import derive_agent_key

from ..conftest import StartServer
from ..support.processes import isolated_env, run_cli
from .agents import SECRET


@pytest.fixture
def silent_imds() -> str:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return f"http://127.0.0.1:{closed.getsockname()[1]}"


def agent_config(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET)
    return run_cli("agent-config", *args, cwd=tmp_path, env=env)


def test_hardened_config_with_the_public_ip_from_imds(tmp_path: Path, imds: str) -> None:
    result = agent_config(tmp_path, "i-0abc123def4567890", "--imds-endpoint", imds)
    assert result.returncode == 0, result.stderr
    settings = json.loads(result.stdout)
    assert settings["wsApiUrl"] == "ws://198.51.100.1:4000/agent"  # moto's public IPv4
    assert settings["wsAgentKey"] == derive_agent_key(SECRET, "i-0abc123def4567890").hex()
    assert "wsSecret" not in settings
    assert SECRET not in result.stdout


def test_fallback_placeholder_and_public_host(tmp_path: Path, silent_imds: str) -> None:
    result = agent_config(tmp_path, "web-01", "--imds-endpoint", silent_imds)
    assert json.loads(result.stdout)["wsApiUrl"] == "ws://{public_ip}:4000/agent"
    assert "--public-host" in result.stderr
    chosen = agent_config(tmp_path, "web-01", "--public-host", "gw.example.com")
    assert json.loads(chosen.stdout)["wsApiUrl"] == "ws://gw.example.com:4000/agent"


def test_tls_pin_and_agent_port_come_from_the_server_config(tmp_path: Path) -> None:
    config = tmp_path / "gateway.toml"
    config.write_text(
        '[gateway]\nagent_listen = "127.0.0.1:443"\ntls_self_signed = true\n'
        f'state_dir = "{tmp_path / "state"}"\npublic_host = "gw.example.com"\n'
    )
    cert, _ = ensure_self_signed(tmp_path / "state")
    output = tmp_path / "agent.json"
    result = agent_config(tmp_path, "web-01", "--config", str(config), "--output", str(output))
    assert result.returncode == 0, result.stderr
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    settings = json.loads(output.read_text())
    assert settings["wsApiUrl"] == "wss://gw.example.com/agent"
    assert settings["wsCertSha256"] == certificate_fingerprint(cert)
    # What it wrote is what the agent reads.
    loaded = load_settings(output)
    assert loaded.key == derive_agent_key(SECRET, "web-01")
    assert loaded.cert_sha256 == settings["wsCertSha256"]


def test_seed_compatible_carries_the_secret_with_a_warning(tmp_path: Path) -> None:
    result = agent_config(tmp_path, "web-01", "--public-host", "h", "--seed-compatible")
    assert json.loads(result.stdout)["wsSecret"] == SECRET
    assert "master secret" in result.stderr


async def test_the_api_serves_configs_only_with_tokens(
    start_server: StartServer, silent_imds: str
) -> None:
    open_server = await start_server(imds_endpoint=silent_imds)
    async with httpx.AsyncClient(base_url=open_server.api_url) as http:
        assert (await http.get("/api/websocket/agents/web-01/config")).status_code == 403
    token = "k" * 32
    guarded = await start_server(api_tokens=(token,), imds_endpoint=silent_imds)
    async with httpx.AsyncClient(base_url=guarded.api_url) as http:
        assert (await http.get("/api/websocket/agents/web-01/config")).status_code == 401
        response = await http.get(
            "/api/websocket/agents/web-01/config",
            params={"publicHost": "gw.example.com"},
            headers={"Authorization": f"Bearer {token}"},
        )
        assert response.status_code == 200
        settings = response.json()
        assert settings["wsAgentKey"] == derive_agent_key(SECRET, "web-01").hex()
        assert settings["wsApiUrl"].startswith("ws://gw.example.com:")
        assert "wsSecret" not in settings


def test_output_onto_an_existing_readable_file_is_tightened(
    tmp_path: Path, silent_imds: str
) -> None:
    output = tmp_path / "agent.json"
    output.write_text("{}\n")
    output.chmod(0o644)
    args = ("web-1", "--imds-endpoint", silent_imds, "--output", str(output))
    result = agent_config(tmp_path, *args)
    assert result.returncode == 0, result.stderr
    assert "0600" in result.stderr + result.stdout  # what it says is what it did
    assert oct(output.stat().st_mode & 0o777) == "0o600"
    assert json.loads(output.read_text())["wsAgentKey"] == derive_agent_key(SECRET, "web-1").hex()
