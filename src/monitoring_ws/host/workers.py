"""``monitoring-ws serve --workers N``: N server processes on one host sharing the port.

Each worker is a full node (Redis is required: it is how they share agents)
with its own state database (``state-w<i>.sqlite3``) in the shared state directory. The
kernel spreads connections over the workers (``SO_REUSEPORT``). This process only
supervises: it starts them, restarts one that dies, and passes SIGTERM/SIGINT on.
"""

from __future__ import annotations

import ctypes
import logging
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Sequence
from types import FrameType

from ..configbase import ConfigError, parse_hostport
from ..sdnotify import notify
from .config import REDIS_URL_ENV, MonitoringConfig
from .serving.tls import ensure_self_signed

__all__ = ["run_workers", "worker_argv"]

log = logging.getLogger("monitoring_ws.workers")
RESTART_DELAY_S = 1.0
_PR_SET_PDEATHSIG = 1
STOP_TIMEOUT_S = 20.0


def _fixed(listen: str) -> str:
    """``listen`` with a real port: the workers must all bind the same one."""
    host, port = parse_hostport(listen, "listen")
    if port:
        return listen
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        probe.bind((host, 0))
        port = probe.getsockname()[1]
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def worker_argv(
    argv: Sequence[str], index: int, listen: str, agent_listen: str | None
) -> list[str]:
    """The command line of worker ``index``: the parent's, without ``--workers`` and
    without ``--redis-url`` (it may hold a password: workers get it in the environment)."""
    args, skip = [], False
    for arg in argv:
        if skip:
            skip = False
            continue
        if arg in {"--workers", "--redis-url"}:
            skip = True
            continue
        if arg.startswith(("--workers=", "--redis-url=")):
            continue
        args.append(arg)
    extra = ["--listen", listen, "--worker-index", str(index)]
    if agent_listen is not None:
        extra += ["--agent-listen", agent_listen]
    return [sys.executable, "-m", "monitoring_ws", *args, *extra]


def _die_with_parent() -> None:
    """In the child, before it runs: SIGTERM when the supervisor dies, even by SIGKILL
    (Linux), so no worker keeps the port and its agents after it."""
    if sys.platform.startswith("linux"):
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def run_workers(config: MonitoringConfig, argv: Sequence[str]) -> int:
    """Start ``[cluster] workers`` server processes and supervise them until SIGTERM/SIGINT."""
    workers, redis_url, server = config.cluster.workers, config.cluster.redis_url, config.server
    if redis_url is None:
        raise ConfigError(
            f"--workers {workers} needs Redis, which is how the workers share agents: "
            "set --redis-url (or [cluster] redis_url), or run one process without --workers"
        )
    listen = _fixed(server.listen)
    agent_listen = None if server.agent_listen is None else _fixed(server.agent_listen)
    if server.tls_self_signed:  # made once here, so that every worker serves the same one
        ensure_self_signed(server.state_dir, server.tls_hostnames)
    commands = [worker_argv(argv, i, listen, agent_listen) for i in range(workers)]
    stopping = False

    def stop(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True

    def forward(signum: int, _frame: FrameType | None) -> None:
        for process in processes:
            if process.poll() is None:
                process.send_signal(signum)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    signal.signal(signal.SIGHUP, forward)  # each worker reloads its settings
    # The Redis URL goes to the workers through their environment, never their argv.
    environment = {**os.environ, REDIS_URL_ENV: redis_url}

    def start(index: int) -> subprocess.Popen[bytes]:
        # The supervisor has no threads yet: preexec_fn is safe here.
        return subprocess.Popen(  # noqa: S603 - our own command line
            commands[index],
            env=environment,
            preexec_fn=_die_with_parent,  # noqa: PLW1509
        )

    processes = [start(i) for i in range(workers)]
    log.info("%d workers on %s: pids %s", workers, listen, [p.pid for p in processes])
    # Each worker reports itself ready in its log; systemd hears from the supervisor, which
    # it watches (NotifyAccess=main), once they are started.
    notify(f"READY=1\nSTATUS={workers} workers on {listen}")
    try:
        while not stopping:
            time.sleep(0.2)
            for index, process in enumerate(processes):
                if process.poll() is not None and not stopping:
                    log.warning(
                        "worker %d (pid %d) exited with %s; starting it again",
                        index,
                        process.pid,
                        process.returncode,
                    )
                    time.sleep(RESTART_DELAY_S)
                    processes[index] = start(index)
    finally:
        notify("STOPPING=1")
        for process in processes:
            if process.poll() is None:
                process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for process in processes:
            try:
                process.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
    return 0
