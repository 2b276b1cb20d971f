"""The ``monitoring-ws`` command, run as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from monitoring_ws import __version__


def run(
    *args: str, stdin: str = "", env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[str]:
    environ = {k: v for k, v in os.environ.items() if k != "MONITORING_WS_SECRET"}
    return subprocess.run(
        [sys.executable, "-m", "monitoring_ws", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environ | (env or {}),
        check=False,
        timeout=60,
    )


def test_version() -> None:
    result = run("--version")
    assert result.returncode == 0
    assert __version__ in result.stdout


def test_derive_key_matches_the_vectors(vectors: list[dict[str, Any]]) -> None:
    v = vectors[0]
    result = run("derive-key", v["agentId"], env={"MONITORING_WS_SECRET": v["secret"]})
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == v["key_hex"]


def test_derive_key_explains_what_is_missing() -> None:
    result = run("derive-key", "agent-1")
    assert result.returncode != 0
    assert "MONITORING_WS_SECRET" in result.stderr
    bad = run("derive-key", "bad id", env={"MONITORING_WS_SECRET": "s"})
    assert bad.returncode != 0
    assert "invalid agent id" in bad.stderr


def test_check_frame_explains_each_check(vectors: list[dict[str, Any]], tmp_path: Path) -> None:
    v = vectors[1]
    wire = json.dumps({**v["envelope"], "signature": v["signature"]})
    ok = run("check-frame", "--agent-key", v["key_hex"], stdin=wire)
    assert ok.returncode == 0, ok.stdout + ok.stderr
    assert "signature verifies with the derived agent key" in ok.stdout
    assert v["canonical"] in ok.stdout
    # The vectors' timestamps are from 2024: the clock check says so, by name.
    assert "FAIL ts is" in ok.stdout

    tampered = tmp_path / "frame.json"
    tampered.write_text(wire.replace('"count": 2', '"count": 3'), encoding="utf-8")
    bad = run("check-frame", str(tampered), env={"MONITORING_WS_SECRET": v["secret"]})
    assert bad.returncode == 1
    assert "FAIL signature does not verify" in bad.stdout

    malformed = run("check-frame", "--agent-key", v["key_hex"], stdin='{"type": "metrics"}')
    assert malformed.returncode == 1
    assert "refused: close 4400" in malformed.stdout


def test_no_command_prints_help() -> None:
    result = run()
    assert result.returncode == 2
    assert "derive-key" in result.stdout


def test_plugins_lists_what_is_installed_and_enabled(tmp_path: Path) -> None:
    config = tmp_path / "monitoring.toml"
    config.write_text("[plugins.websocket]\nenabled = true\n")
    result = run("plugins", "--config", str(config))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert any(line.split()[:2] == ["websocket", "enabled"] for line in lines)
    assert any(line.split()[:2] == ["uptime", "monitoring-ws-uptime"] for line in lines)
    assert any(
        line.split()[:2] == ["websocket", "enabled"] for line in run("plugins").stdout.splitlines()
    )
    config.write_text("[plugins.websocket]\nenabled = false\n")
    disabled = run("plugins", "--config", str(config))
    assert any(
        line.split()[:2] == ["websocket", "disabled"] for line in disabled.stdout.splitlines()
    )


def test_secrets_on_the_command_line_warn() -> None:
    # A wrong URL ends the agent at once, after the warning.
    result = run("agent", "--agent-key", "ab" * 32, "--url", "http://127.0.0.1:1/agent")
    assert result.returncode == 78  # EX_CONFIG: a wrong setting, systemd does not restart it
    assert "wsApiUrl must be ws:// or wss://" in result.stderr
    assert "--agent-key on the command line is visible to other users" in result.stderr
    assert "MONITORING_WS_AGENT_KEY" in result.stderr


def test_workers_get_the_redis_url_without_argv() -> None:
    from monitoring_ws.host.workers import worker_argv  # noqa: PLC0415 - coredis

    argv = ["serve", "--redis-url", "redis://:hunter2@127.0.0.1:1", "--workers", "2"]
    worker = worker_argv(argv, 0, "127.0.0.1:4000", None)
    assert not any("hunter2" in arg for arg in worker)
    worker = worker_argv(
        ["serve", "--redis-url=redis://:hunter2@h:1", "--workers=2"], 1, "h:1", None
    )
    assert not any("hunter2" in arg or "--workers" in arg for arg in worker)
