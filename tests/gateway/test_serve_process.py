"""``monitoring-ws serve`` as a real process: start, curl, signals, configuration errors."""

from __future__ import annotations

import signal
import socket
import ssl
from pathlib import Path

import pytest
import trio

from monitoring_ws.gateway.config import GatewayConfig
from monitoring_ws.host.serving.tls import certificate_fingerprint, ensure_self_signed
from monitoring_ws.protocol import CloseCode, parse_retry_after

from ..support.processes import isolated_env, run_cli, server_process
from .agents import SECRET, close_code, now_ms, open_agent


def test_missing_secret_says_how_to_provide_one(tmp_path: Path) -> None:
    result = run_cli("serve", "--listen", "127.0.0.1:0", cwd=tmp_path, env=isolated_env())
    assert result.returncode == 78  # EX_CONFIG: systemd does not restart it
    assert "no master secret" in result.stderr
    assert "AWS_SECRET_ACCESS_KEY" in result.stderr


def test_non_loopback_api_without_tokens_refuses_to_start(tmp_path: Path) -> None:
    env = isolated_env(AWS_SECRET_ACCESS_KEY=SECRET, AWS_ACCESS_KEY_ID="AKIDEXAMPLE")
    result = run_cli("serve", "--listen", "0.0.0.0:4000", cwd=tmp_path, env=env)
    assert result.returncode == 78
    assert "beyond loopback" in result.stderr
    assert "api_tokens" in result.stderr


def test_seed_curl_commands_and_sigterm(tmp_path: Path) -> None:
    env = isolated_env(AWS_SECRET_ACCESS_KEY=SECRET, AWS_ACCESS_KEY_ID="AKIDEXAMPLE")
    with server_process("--listen", "127.0.0.1:0", env=env, cwd=tmp_path) as (process, api, ws):
        port = api.rsplit(":", 1)[1]
        base = f"http://localhost:{port}"  # the seed's host name, as curl resolves it

        async def scenario() -> None:
            async with open_agent(ws, "i-0abc123def4567890") as agent, trio.open_nursery() as n:
                n.start_soon(agent.serve_commands)
                listing = await trio.run_process(
                    ["curl", "-sS", f"{base}/api/websocket/agents"], capture_stdout=True
                )
                assert b'"agentId": "i-0abc123def4567890"' in listing.stdout.replace(
                    b'":"', b'": "'
                )
                command = await trio.run_process(
                    [
                        "curl",
                        "-sS",
                        "-X",
                        "POST",
                        f"{base}/api/websocket/agents/i-0abc123def4567890/command",
                        "-H",
                        "Content-Type: application/json",
                        "-d",
                        '{"command": "ping", "args": {}}',
                    ],
                    capture_stdout=True,
                )
                assert b'"ok":true' in command.stdout.replace(b" ", b""), command.stdout
                process.send_signal(signal.SIGTERM)
                assert await close_code(agent.ws, timeout=10) == CloseCode.GOING_AWAY
                assert agent.ws.closed is not None
                assert parse_retry_after(agent.ws.closed.reason or "") is not None
                n.cancel_scope.cancel()

        trio.run(scenario)
        assert process.wait(timeout=15) == 0


def test_default_listen_is_the_seed_address() -> None:
    assert GatewayConfig().server.listen == "127.0.0.1:4000"


@pytest.mark.parametrize("flag", ["--tls-self-signed"])
def test_tls_self_signed_fingerprint_is_printed_and_pins(tmp_path: Path, flag: str) -> None:
    env = isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET)
    args = ("--listen", "127.0.0.1:0", "--state-dir", str(tmp_path / "state"), flag)
    with server_process(*args, env=env, cwd=tmp_path) as (_process, api, ws):
        assert api.startswith("https://")
        assert ws.startswith("wss://")
        cert = (tmp_path / "state" / "tls" / "cert.pem").read_text()
        assert oct((tmp_path / "state" / "tls" / "key.pem").stat().st_mode & 0o777) == "0o600"
        fingerprint = certificate_fingerprint(tmp_path / "state" / "tls" / "cert.pem")

        async def scenario() -> None:
            # Pinning: trust exactly this certificate, whatever names it carries.
            pinned = ssl.create_default_context(cadata=cert)
            pinned.check_hostname = False
            async with open_agent(ws, "tls-agent", ssl_context=pinned) as agent:
                await agent.send(agent.session.heartbeat(now_ms()))
                assert await agent.events()  # the signed answer, over TLS
            # Another certificate is refused (a bounded wait: trio-websocket#199).
            other_cert, _ = ensure_self_signed(tmp_path / "other")
            wrong = ssl.create_default_context(cadata=other_cert.read_text())
            wrong.check_hostname = False
            with pytest.raises(Exception):  # noqa: B017, PT011 - handshake failure or timeout
                async with open_agent(ws, "tls-agent", ssl_context=wrong):
                    pass

        trio.run(scenario)
    assert len(fingerprint) == 64


def test_port_in_use_is_one_clear_line(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        env = isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET)
        result = run_cli("serve", "--listen", f"127.0.0.1:{port}", cwd=tmp_path, env=env)
    assert result.returncode != 0
    assert "cannot listen" in result.stderr
    assert "Traceback" not in result.stderr
