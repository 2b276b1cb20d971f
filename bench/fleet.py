"""Load-generator pieces for the gateway benchmarks: a lean agent and a lean HTTP caller.

Loopback only. The agent speaks WebSocket through wsproto over a raw trio stream and
signs with the project's sans-IO ``AgentSession``; frames for the timed phase are signed
and masked beforehand, so the generator spends its CPU on the socket, not on crypto.
"""

from __future__ import annotations

import json
import os
import re
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import trio
from wsproto import ConnectionType, WSConnection
from wsproto.events import (
    AcceptConnection,
    CloseConnection,
    Ping,
    Request,
    TextMessage,
)

from monitoring_ws.protocol import (
    AgentSession,
    AuthAccepted,
    AuthHello,
    Capabilities,
    CommandReceived,
    CommandResult,
    Event,
    derive_agent_key,
)

try:  # for the benches: each holds a socket per agent
    from monitoring_ws.host.serving.process import raise_open_file_limit
except ImportError:  # an older build under test (A/B with PYTHONPATH)
    from monitoring_ws.host.server import (  # type: ignore[attr-defined,no-redef]
        raise_open_file_limit,  # noqa: F401 - the benches import it from here
    )

SECRET = "bench-master-secret"
READY = re.compile(r"API on (http://\S+); agents connect to (\S+)")


def now_ms() -> int:
    return time.time_ns() // 1_000_000


class BenchAgent:
    """One agent connection: handshake, auth, then frames in and out."""

    def __init__(
        self,
        host: str,
        port: int,
        agent_id: str,
        commands: tuple[str, ...] = ("ping",),
        features: tuple[str, ...] = (),
    ):
        self.host, self.port, self.agent_id = host, port, agent_id
        hello = AuthHello("bench", f"bench-{agent_id}", Capabilities(commands, features))
        self.session = AgentSession(
            agent_id=agent_id, key=derive_agent_key(SECRET, agent_id), hello=hello
        )
        self.ws = WSConnection(ConnectionType.CLIENT)
        self.stream: trio.SocketStream | None = None
        self._texts: list[str] = []

    async def connect(self) -> None:
        self.stream = await trio.open_tcp_stream(self.host, self.port)
        await self.stream.send_all(self.ws.send(Request(host=self.host, target="/agent")))
        while not await self._pump(accept=True):
            pass
        await self.stream.send_all(self.ws.send(TextMessage(self.session.start(now_ms()))))
        events = await self.next_events()
        if not isinstance(events[0], AuthAccepted):
            raise ConnectionError(f"{self.agent_id}: auth failed: {events}")

    def encode(self, text: str) -> bytes:
        """The masked WebSocket frame for ``text``, ready to write."""
        return self.ws.send(TextMessage(text))

    async def send_raw(self, data: bytes) -> None:
        assert self.stream is not None
        await self.stream.send_all(data)

    async def next_events(self) -> list[Event]:
        while not self._texts:
            await self._pump()
        return self.session.receive(self._texts.pop(0), now_ms())

    async def _pump(self, accept: bool = False) -> bool:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError(f"{self.agent_id}: server closed the connection")
        self.ws.receive_data(data)
        accepted = False
        for event in self.ws.events():
            if isinstance(event, AcceptConnection):
                accepted = True
            elif isinstance(event, TextMessage):
                self._texts.append(event.data)
            elif isinstance(event, Ping):
                await self.stream.send_all(self.ws.send(event.response()))
            elif isinstance(event, CloseConnection):
                raise ConnectionError(f"{self.agent_id}: closed {event.code} {event.reason}")
        return accepted

    async def answer_commands(self) -> None:
        """Echo every command's args back as its result, until cancelled."""
        while True:
            for event in await self.next_events():
                if isinstance(event, CommandReceived):
                    result = CommandResult(event.command.command_id, True, 0, result={"pong": True})
                    await self.send_raw(self.encode(self.session.command_result(result, now_ms())))

    async def aclose(self) -> None:
        if self.stream is not None:
            await self.stream.aclose()


class HttpCaller:
    """Keep-alive HTTP/1.1 POSTs with fixed bodies; latency per request."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.stream: trio.SocketStream | None = None
        self._buffer = b""

    async def connect(self) -> None:
        self.stream = await trio.open_tcp_stream(self.host, self.port)

    async def post(self, path: str, body: bytes) -> tuple[int, bytes]:
        return await self.request("POST", path, body)

    async def request(self, method: str, path: str, body: bytes = b"") -> tuple[int, bytes]:
        if self.stream is None:
            await self.connect()
        assert self.stream is not None
        head = f"{method} {path} HTTP/1.1\r\nHost: {self.host}\r\n"
        if body or method != "GET":
            head += f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
        await self.stream.send_all(f"{head}\r\n".encode() + body)
        while b"\r\n\r\n" not in self._buffer:
            self._buffer += await self._receive()
        header, _, rest = self._buffer.partition(b"\r\n\r\n")
        status = int(header.split(b" ", 2)[1])
        length = int(re.search(rb"(?i)content-length: *(\d+)", header).group(1))  # type: ignore[union-attr]
        while len(rest) < length:
            rest += await self._receive()
        self._buffer = rest[length:]
        if re.search(rb"(?i)\r\nconnection: *close", header):
            # Hypercorn ends a keep-alive connection after keep_alive_max_requests.
            await self.stream.aclose()
            self.stream, self._buffer = None, b""
        return status, rest[:length]

    async def _receive(self) -> bytes:
        assert self.stream is not None
        data = await self.stream.receive_some(65536)
        if not data:
            raise ConnectionError("the server closed the HTTP connection")
        return data


def start_server(
    *args: str, cpu: int | None = 0, listen: str = "127.0.0.1:0", **env: str
) -> tuple[subprocess.Popen[str], str, str]:
    """``monitoring-ws serve`` on ``listen`` (an ephemeral loopback port), pinned to ``cpu``."""
    environ = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    environ |= {"MONITORING_WS_MASTER_SECRETS": SECRET, "AWS_EC2_METADATA_DISABLED": "true"}
    environ |= env
    if "--state-dir" not in args:  # a fresh state database per run, not one that grows
        args = (*args, "--state-dir", tempfile.mkdtemp(prefix="bench-state-"))
    command = [sys.executable, "-m", "monitoring_ws", "serve", "--listen", listen, *args]
    process = subprocess.Popen(  # noqa: S603 - our own command line
        command,
        stderr=subprocess.PIPE,
        text=True,
        env=environ,
        preexec_fn=(lambda: os.sched_setaffinity(0, {cpu})) if cpu is not None else None,  # noqa: PLW1509
    )
    assert process.stderr is not None
    for line in process.stderr:
        match = READY.search(line)
        if match:
            # Keep draining stderr so the server never blocks on a full pipe.
            threading.Thread(target=_drain, args=(process.stderr,), daemon=True).start()
            return process, match.group(1), match.group(2)
    raise RuntimeError(f"server exited with {process.wait()}")


def listener_args(listener: str, *, api: str | None = None) -> list[str]:
    """``serve`` arguments for the agent listener asked for: ``combined`` (agents on the
    API's port), or ``agent_listen`` served ``lean`` or by ``hypercorn``; ``api`` is what
    serves the API's port (``api_server``; None: the server's default, which an older
    build under test may not know)."""
    if listener == "combined" and api is None:
        return []
    config = Path(tempfile.mkdtemp(prefix="bench-config-")) / "monitoring.toml"
    server = "[server]\n" if api is None else f'[server]\napi_server = "{api}"\n'
    if listener == "combined":
        config.write_text(server, encoding="utf-8")
        return ["--config", str(config)]
    config.write_text(f'{server}agent_server = "{listener}"\n', encoding="utf-8")
    return ["--agent-listen", "127.0.0.1:0", "--config", str(config)]


def _drain(stream: Any) -> None:
    for _ in stream:
        pass


def cpu_seconds(pid: int) -> float:
    """User plus system CPU time the process has used."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(latencies_s: list[float]) -> dict[str, Any]:
    return {
        "p50_ms": round(statistics.median(latencies_s) * 1000, 3),
        "p99_ms": round(percentile(latencies_s, 0.99) * 1000, 3),
    }


def emit(result: dict[str, Any]) -> None:
    print(json.dumps(result), flush=True)
