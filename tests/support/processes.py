"""Real ``monitoring-ws`` processes for the tests: a free port, an environment without this
machine's AWS settings, one-shot commands, and servers and agents to start, kill -9 and
restart."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

SECRET = "gateway-test-secret"  # tests/conftest.py's; the servers here sign with it

STARTUP_S = 30.0


def free_port(host: str = "127.0.0.1") -> int:
    """A port nothing listens on right now (for a server that must bind a fixed one)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        return int(probe.getsockname()[1])


READY = re.compile(r"API on (https?://\S+); agents connect to (\S+)")


def isolated_env(**extra: str) -> dict[str, str]:
    """No AWS configuration from this machine, and no instance-metadata lookups."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "MONITORING_WS_"))}
    env |= {
        "AWS_EC2_METADATA_DISABLED": "true",
        "AWS_CONFIG_FILE": "/dev/null",
        "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
    }
    return env | extra


def run_cli(*args: str, cwd: Path, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """``monitoring-ws ARGS`` to completion, output captured."""
    return subprocess.run(
        [sys.executable, "-m", "monitoring_ws", *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=cwd,
        env=env,
    )


@contextmanager
def server_process(
    *args: str, env: dict[str, str], cwd: Path
) -> Iterator[tuple[subprocess.Popen[str], str, str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "monitoring_ws", "serve", *args],
        stderr=subprocess.PIPE,
        text=True,
        env=env,
        cwd=cwd,
    )
    try:
        assert process.stderr is not None
        for line in process.stderr:
            match = READY.search(line)
            if match:
                yield process, match.group(1), match.group(2)
                break
        else:
            raise AssertionError(f"server exited with {process.wait()} before it was ready")
    finally:
        if process.poll() is None:
            process.kill()
        process.wait(timeout=10)


@attrs.define
class Process:
    """A ``monitoring-ws`` process whose output goes to a file (a pipe nobody reads would
    block a chatty process)."""

    args: tuple[str, ...]
    log: Path
    env: dict[str, str]
    cwd: Path
    ready: str | None = None  # a line that says it is up
    popen: subprocess.Popen[bytes] | None = None

    @property
    def pid(self) -> int:
        assert self.popen is not None
        return self.popen.pid

    def start(self) -> None:
        offset = self.log.stat().st_size if self.log.exists() else 0
        with self.log.open("ab") as output:
            self.popen = subprocess.Popen(
                [sys.executable, "-m", "monitoring_ws", *self.args],
                stdout=output,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.cwd,
            )
        if self.ready is None:
            return
        deadline = time.monotonic() + STARTUP_S
        while time.monotonic() < deadline:
            with self.log.open("rb") as output:
                output.seek(offset)
                if self.ready in output.read().decode(errors="replace"):
                    return
            if self.popen.poll() is not None:
                break
            time.sleep(0.05)
        raise AssertionError(f"{self.args[0]} did not start:\n{self.log.read_text()[-3000:]}")

    def kill(self) -> None:
        """``kill -9``: no close frames, no final commit."""
        assert self.popen is not None
        os.kill(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=10)

    def stop(self) -> None:
        if self.popen is not None and self.popen.poll() is None:
            self.popen.terminate()
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(timeout=10)


def server(tmp_path: Path, port: int, *extra: str) -> Process:
    """``monitoring-ws serve`` on ``port`` with its state in ``tmp_path/server-state``."""
    args = ("serve", "--listen", f"127.0.0.1:{port}", "--state-dir", str(tmp_path / "server-state"))
    return Process(
        args=(*args, *extra),
        log=tmp_path / "server.log",
        env=isolated_env(MONITORING_WS_MASTER_SECRETS=SECRET),
        cwd=tmp_path,
        ready="API on http://",
    )


def agent(tmp_path: Path, port: int, agent_id: str, **settings: Any) -> Process:
    """``monitoring-ws agent`` with a settings file and its outbox in ``tmp_path``."""
    config = tmp_path / f"{agent_id}.json"
    values = {
        "wsApiUrl": f"ws://127.0.0.1:{port}/agent",
        "wsSecret": SECRET,
        "agentId": agent_id,
        "stateDir": str(tmp_path / f"{agent_id}-state"),
        "backoffBaseS": 0.2,
        "backoffCapS": 1.0,
        **settings,
    }
    config.write_text(json.dumps(values), encoding="utf-8")
    return Process(
        args=("agent", "--config", str(config)),
        log=tmp_path / f"{agent_id}.log",
        env=isolated_env(),
        cwd=tmp_path,
        ready=f"connected to ws://127.0.0.1:{port}/agent as {agent_id}",
    )


__all__ = ["READY", "Process", "agent", "free_port", "server"]
