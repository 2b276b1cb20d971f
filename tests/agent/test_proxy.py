"""The agent through a real HTTP CONNECT proxy (proxy.py) on loopback."""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trio

from monitoring_ws.agent.dial import proxy_for
from monitoring_ws.agent.main import build_agent
from tests.support.served import Served as Running

from .test_agent import settings_for


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[int]:
    """proxy.py with basic auth user:secret, on an ephemeral loopback port."""
    port_file = tmp_path / "proxy.port"
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "proxy",
            "--hostname",
            "127.0.0.1",
            "--port",
            "0",
            "--port-file",
            str(port_file),
            "--basic-auth",
            "user:s3cr3t",
            "--num-workers",
            "1",
            "--num-acceptors",
            "1",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 30
        while not (port_file.exists() and port_file.read_text().strip()):
            assert process.poll() is None, "proxy.py exited"
            assert time.monotonic() < deadline, "proxy.py did not start"
            time.sleep(0.05)
        yield int(port_file.read_text())
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_proxy_selection_follows_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"):
        monkeypatch.delenv(name, raising=False)
        monkeypatch.delenv(name.lower(), raising=False)
    assert proxy_for("wss://gw.example.com/agent") is None
    monkeypatch.setenv("ALL_PROXY", "http://127.0.0.1:3128")
    assert proxy_for("wss://gw.example.com/agent") == "http://127.0.0.1:3128"
    monkeypatch.setenv("HTTPS_PROXY", "http://u:p@127.0.0.1:8080")
    assert proxy_for("wss://gw.example.com/agent") == "http://u:p@127.0.0.1:8080"
    monkeypatch.setenv("NO_PROXY", "localhost,.example.com")
    assert proxy_for("wss://gw.example.com/agent") is None
    assert proxy_for("wss://other.test/agent") == "http://u:p@127.0.0.1:8080"
    monkeypatch.setenv("NO_PROXY", "*")
    assert proxy_for("wss://other.test/agent") is None


async def test_agent_connects_through_the_proxy_with_credentials(
    server: Running, proxy: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    for name in ("NO_PROXY", "no_proxy", "ALL_PROXY", "all_proxy", "http_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTP_PROXY", f"http://user:s3cr3t@127.0.0.1:{proxy}")
    agent = build_agent(settings_for(server.agent_urls[0], "proxied"))
    async with trio.open_nursery() as nursery:
        nursery.start_soon(agent.run)
        with trio.fail_after(15):
            await agent.connected.wait()
        nursery.cancel_scope.cancel()

    monkeypatch.setenv("HTTP_PROXY", f"http://user:wrong@127.0.0.1:{proxy}")
    code, reason = await build_agent(settings_for(server.agent_urls[0], "proxied")).connect_once()
    assert code is None
    assert "refused the tunnel" in reason
    assert "407" in reason
