"""``Type=notify``: the server says READY=1 once it listens and STOPPING=1 when it stops;
the agent says READY=1 once its settings are read, connected or not (a datagram socket
of the test's stands in for systemd's ``$NOTIFY_SOCKET``)."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitoring_ws.sdnotify import notify

from .conftest import SECRET
from .support.processes import free_port, isolated_env


@pytest.fixture
def notify_socket(tmp_path: Path) -> Iterator[tuple[socket.socket, str]]:
    path = str(tmp_path / "notify")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listening:
        listening.bind(path)
        listening.settimeout(60)  # only catches a hang
        yield listening, path


def _start(argv: list[str], tmp_path: Path, path: str, **env: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "monitoring_ws", *argv],
        cwd=tmp_path,
        env=isolated_env(NOTIFY_SOCKET=path, **env),
        stderr=subprocess.DEVNULL,
    )


def test_the_server_is_ready_once_it_listens_and_says_when_it_stops(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    listening, path = notify_socket
    port = free_port()
    argv = ["serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "s")]
    server = _start(argv, tmp_path, path, MONITORING_WS_MASTER_SECRETS=SECRET)
    try:
        ready = listening.recv(4096).decode()
        assert ready.splitlines() == ["READY=1", f"STATUS=API on http://127.0.0.1:{port}"]
        with socket.create_connection(("127.0.0.1", port), timeout=10):
            pass  # it does listen
        server.terminate()
        assert listening.recv(4096) == b"STOPPING=1"
        assert server.wait(timeout=60) == 0
    finally:
        server.kill()
        server.wait()


def test_the_agent_is_ready_before_it_connects(
    tmp_path: Path, notify_socket: tuple[socket.socket, str]
) -> None:
    listening, path = notify_socket
    settings = tmp_path / "agent.json"
    nowhere = f"ws://127.0.0.1:{free_port()}/agent"  # nothing listens: it keeps trying
    values = {"wsApiUrl": nowhere, "wsSecret": SECRET, "agentId": "a-1", "stateDir": "st"}
    settings.write_text(json.dumps(values))
    agent = _start(["agent", "--config", str(settings)], tmp_path, path)
    try:
        assert listening.recv(4096).decode().splitlines() == [
            "READY=1",
            f"STATUS=agent a-1 -> {nowhere}",
        ]
        agent.terminate()
        assert listening.recv(4096) == b"STOPPING=1"
    finally:
        agent.kill()
        agent.wait()


def test_outside_systemd_nothing_is_sent() -> None:
    assert notify("READY=1", environ={}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": "/nonexistent/socket"}) is False
    assert notify("READY=1", environ={"NOTIFY_SOCKET": "@monitoring-ws-test-none"}) is False
