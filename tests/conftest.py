"""Shared fixtures: the independent test vectors and a small signed-frame factory."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from hypothesis import HealthCheck, settings
from hypothesis.configuration import set_hypothesis_home_dir
from hypothesis.database import DirectoryBasedExampleDatabase
from moto.server import ThreadedMotoServer

from monitoring_ws.clock import wall_ms

from .support.processes import free_port
from .support.served import Served, config_from_flat, serve_in

# Hypothesis keeps its examples and caches outside the checkout (no test writes into it).
_HYPOTHESIS_HOME = Path(tempfile.gettempdir()) / "monitoring-ws-hypothesis"
set_hypothesis_home_dir(str(_HYPOTHESIS_HOME))
_EXAMPLES = DirectoryBasedExampleDatabase(_HYPOTHESIS_HOME / "examples")
_QUIET = [HealthCheck.too_slow]
settings.register_profile(
    "default", deadline=None, suppress_health_check=_QUIET, database=_EXAMPLES
)
# The thorough run: property tests try their full example counts (tests/support.examples).
settings.register_profile("deep", deadline=None, suppress_health_check=_QUIET, database=_EXAMPLES)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "default"))

#: The master secret of the test servers (tests/gateway/agents.py signs with it).
SECRET = "gateway-test-secret"
REPO = Path(__file__).resolve().parents[1]
# A byte-identical copy of the independent implementation's vectors (tests/test_vectors.py
# compares it with the original when one lies beside the checkout).
VECTORS = Path(
    os.environ.get("MONITORING_WS_VECTORS", REPO / "tests" / "data" / "protocol-test-vectors.json")
)


@pytest.fixture(scope="session", autouse=True)
def _outside_the_checkout(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """Every test runs in a scratch directory: a relative path (a default ``state_dir``)
    lands there, never in the checkout."""
    before = Path.cwd()
    os.chdir(tmp_path_factory.mktemp("cwd"))
    try:
        yield
    finally:
        os.chdir(before)


@pytest.fixture(scope="session")
def vectors() -> list[dict[str, Any]]:
    if not VECTORS.is_file():
        pytest.fail(
            f"test vectors not found at {VECTORS} (tests/data/ in the repository, or set "
            "MONITORING_WS_VECTORS to their path)"
        )
    data: list[dict[str, Any]] = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert data, "the vector file is empty"
    return data


# A real server (the host, Hypercorn trio worker) on an ephemeral loopback port, per test.
StartServer = Callable[..., Awaitable[Served]]
Running = Served  # what tests annotate a started server with


@pytest.fixture(params=["hypercorn", "lean"])
def agent_listener(request: pytest.FixtureRequest) -> str:
    """Run a module's tests against both agent listeners: Hypercorn on the API's port
    (``api_server = "hypercorn"``), and the lean one on ``agent_listen`` (``pytestmark =
    pytest.mark.usefixtures("agent_listener")``)."""
    return str(request.param)


@pytest.fixture(params=["lean", "hypercorn"])
def api_server(request: pytest.FixtureRequest) -> str:
    """Run a module's tests against both servers of the API's port (``api_server``):
    the lean listener (the default) and Hypercorn (``pytestmark =
    pytest.mark.usefixtures("api_server")``)."""
    return str(request.param)


@pytest.fixture
async def start_server(
    nursery: trio.Nursery, tmp_path: Path, request: pytest.FixtureRequest
) -> StartServer:
    """Start a server with flat gateway settings as overrides (docs/gateway.md) and the
    sessions' wall clock (``clock``); it stops when the test ends. In a module that asks
    for ``agent_listener``, agents reach it through the listener named."""
    listener = None
    if "agent_listener" in request.fixturenames:
        listener = request.getfixturevalue("agent_listener")
    api = None
    if "api_server" in request.fixturenames:
        api = request.getfixturevalue("api_server")

    async def start(*, clock: Callable[[], int] = wall_ms, **overrides: Any) -> Served:
        settings: dict[str, Any] = {
            "listen": "127.0.0.1:0",
            "master_secrets": (SECRET,),
            "state_dir": tmp_path / "state",
        }
        if listener == "lean":
            settings |= {"agent_listen": "127.0.0.1:0", "agent_server": "lean"}
        elif listener == "hypercorn":
            settings["api_server"] = "hypercorn"  # agents on the API's port, on Hypercorn
        if api is not None:
            settings["api_server"] = api
        settings.update(overrides)
        return await serve_in(nursery, config_from_flat(settings), clock)

    return start


@pytest.fixture
async def server(start_server: StartServer) -> Served:
    return await start_server()


@pytest.fixture
async def http(server: Served) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as client:
        yield client


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    """moto's server mode on loopback, its state reset (moto keeps state per process,
    across servers); yields its endpoint URL."""
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    endpoint = f"http://{host}:{port}"
    reset = urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")  # noqa: S310
    urllib.request.urlopen(reset, timeout=10).close()  # noqa: S310 - our loopback moto
    try:
        yield endpoint
    finally:
        server.stop()


@pytest.fixture
def imds() -> Iterator[str]:
    """Instance metadata served by moto's server mode on loopback."""
    with moto_server() as endpoint:
        yield endpoint


class RedisProcess:
    """A real redis-server on a fixed loopback port, without persistence; restartable."""

    def __init__(self, cwd: Path, *extra_args: str) -> None:
        self.extra_args = extra_args
        executable = shutil.which("redis-server")
        assert executable, "redis-server is missing: ./dev test installs it (apt-get install)"
        self.executable, self.cwd = executable, cwd
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = ["--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"]
        args += self.extra_args
        self.process = subprocess.Popen(
            [self.executable, *args],
            cwd=self.cwd,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=1) as probe:
                    probe.sendall(b"PING\r\n")
                    if probe.recv(16).startswith((b"+PONG", b"-NOAUTH")):
                        return
            except OSError:
                pass
            assert time.monotonic() < deadline, "redis-server did not start"
            assert self.process.poll() is None, "redis-server exited"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


@pytest.fixture
def redis_server(tmp_path: Path) -> Iterator[RedisProcess]:
    server = RedisProcess(tmp_path)
    server.start()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis_url(redis_server: RedisProcess) -> str:
    return redis_server.url
