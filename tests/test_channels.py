"""Shells and tunnels end to end: real agents, a real server, the API's WebSocket route
(docs/sessions.md; docs/api.md, "Sessions and tunnels")."""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import pty
import pwd
import re
import socket
import struct
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import WebSocketConnection, open_websocket_url

from monitoring_ws.agent.channel_settings import SessionSettings, TunnelSettings

from .conftest import StartServer
from .support.processes import isolated_env
from .test_audit import until
from .test_ctl import ctl
from .test_jobs import Fleet, all_connected

#: The tests that carry bytes run against both agent listeners; the rest on one.
both_listeners = pytest.mark.usefixtures("agent_listener")


def _ws_url(api_url: str, agent_id: str, **query: Any) -> str:
    params = "&".join(f"{name}={value}" for name, value in query.items())
    return api_url.replace("http://", "ws://") + f"/api/agents/{agent_id}/channel?{params}"


async def _control(ws: WebSocketConnection) -> dict[str, Any]:
    """The next text message (binary ones before it are skipped)."""
    while True:
        message = await ws.get_message()
        if isinstance(message, str):
            parsed: dict[str, Any] = json.loads(message)
            return parsed


async def _read_until(ws: WebSocketConnection, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        message = await ws.get_message()
        assert isinstance(message, bytes), message
        seen += message
    return seen


#: An agent's settings with shells on (/bin/sh: on every machine).
SHELLS = SessionSettings(shell=True, program="/bin/sh")  # noqa: S604


async def _start(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path, **agent: Any
) -> str:
    """A server and one agent ``box-1`` with these settings, connected: the API's URL."""
    server = await start_server()
    fleet = Fleet(tmp_path)
    fleet.start(nursery, server.agent_urls[0], "box-1", {}, **agent)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 1)
    return server.api_url


async def test_a_shell_is_refused_with_the_agents_reason_while_shells_are_off(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = await _start(start_server, nursery, tmp_path)
    with trio.fail_after(30):
        async with open_websocket_url(_ws_url(api, "box-1", kind="shell")) as ws:
            refused = await _control(ws)
    assert refused["type"] == "refused"
    assert refused["code"] == "refused"
    assert "sessions" in refused["message"]
    assert "shell" in refused["message"]


@both_listeners
async def test_a_shell_runs_records_and_reports_its_exit_status(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = await _start(start_server, nursery, tmp_path, sessions=SHELLS)
    async with httpx.AsyncClient(base_url=api, timeout=30) as http:
        with trio.fail_after(60):
            url = _ws_url(api, "box-1", kind="shell", cols=100, rows=30)
            async with open_websocket_url(url) as ws:
                opened = await _control(ws)
                assert opened["type"] == "opened"
                assert opened["recording"]
                await ws.send_message(b"echo $((6*7))\r")
                assert b"42" in await _read_until(ws, b"42")
                await ws.send_message(json.dumps({"type": "resize", "cols": 120, "rows": 40}))
                await ws.send_message(b"stty size; exit 3\r")
                await _read_until(ws, b"40 120")
                assert await _control(ws) == {"type": "eof"}  # the terminal closed
                closed = await _control(ws)
                assert closed == {"type": "closed", "reason": "exit", "message": "", "exitCode": 3}
        listed = (await http.get("/api/recordings")).json()["recordings"]
        assert [r["id"] for r in listed] == [opened["recording"]]
        assert listed[0]["agentId"] == "box-1"
        assert listed[0]["exitCode"] == 3
        assert listed[0]["bytesIn"] > 0
        assert listed[0]["bytesOut"] > 0
        cast = await http.get(f"/api/recordings/{opened['recording']}")
        assert cast.status_code == 200
        header, *events = (json.loads(line) for line in cast.text.splitlines())
        assert header["version"] == 2
        assert (header["width"], header["height"]) == (100, 30)
        output = "".join(data for _, kind, data in events if kind == "o")
        assert "42" in output
        assert [data for _, kind, data in events if kind == "r"] == ["120x40"]
        assert (await http.get("/api/recordings/" + "0" * 32)).status_code == 404
    # Audited: who (no token configured here: none), which agent, bytes each way, why.
    audit = tmp_path / "state" / "audit.jsonl"
    found = await until(audit, lambda ls: any(line["event"] == "channel_closed" for line in ls))
    [opened_line] = [line for line in found if line["event"] == "channel_opened"]
    [closed_line] = [line for line in found if line["event"] == "channel_closed"]
    assert opened_line["agentId"] == closed_line["agentId"] == "box-1"
    assert opened_line["recording"] == closed_line["recording"] == opened["recording"]
    assert closed_line["exitCode"] == 3
    assert closed_line["bytesIn"] == listed[0]["bytesIn"]
    assert closed_line["bytesOut"] == listed[0]["bytesOut"]
    assert closed_line["reason"] == "exit"


async def _echo_server(nursery: trio.Nursery) -> int:
    async def echo(stream: trio.SocketStream) -> None:
        async with stream:
            async for data in stream:
                await stream.send_all(data)
            await stream.send_eof()

    listeners = await nursery.start(functools.partial(trio.serve_tcp, echo, 0, host="127.0.0.1"))
    port: int = listeners[0].socket.getsockname()[1]
    return port


@both_listeners
async def test_a_tunnel_carries_10_mb_intact_and_refuses_what_is_not_allowed(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = await _echo_server(nursery)
    api = await _start(
        start_server, nursery, tmp_path, tunnels=TunnelSettings(allow=(("127.0.0.1", port),))
    )
    payload = os.urandom(10 << 20)
    with trio.fail_after(120):
        url = _ws_url(api, "box-1", kind="tunnel", host="127.0.0.1", port=port)
        async with open_websocket_url(url, max_message_size=1 << 24) as ws:
            assert (await _control(ws))["type"] == "opened"
            back = hashlib.sha256()
            received = 0

            async def send() -> None:
                for at in range(0, len(payload), 200_000):
                    await ws.send_message(payload[at : at + 200_000])
                await ws.send_message(json.dumps({"type": "eof"}))

            async with trio.open_nursery() as both:
                both.start_soon(send)
                while True:
                    message = await ws.get_message()
                    if isinstance(message, bytes):
                        back.update(message)
                        received += len(message)
                        continue
                    control = json.loads(message)
                    if control["type"] == "closed":
                        break
            assert received == len(payload)
            assert back.digest() == hashlib.sha256(payload).digest()
            assert control["reason"] == "closed"

        other = _ws_url(api, "box-1", kind="tunnel", host="127.0.0.1", port=port + 1)
        async with open_websocket_url(other) as ws:
            refused = await _control(ws)
        assert refused["type"] == "refused"
        assert "not in tunnels.allow" in refused["message"]


async def _read_fd_until(stream: trio.lowlevel.FdStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        data = await stream.receive_some(4096)
        if not data:
            break
        seen += data
    return seen


async def test_ctl_shell_in_a_terminal_prints_42_and_exits_with_the_remote_status(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = await _start(start_server, nursery, tmp_path, sessions=SHELLS)
    master, terminal = pty.openpty()
    env = isolated_env(XDG_CONFIG_HOME=str(tmp_path), TERM="xterm")
    process = await trio.lowlevel.open_process(
        [sys.executable, "-m", "monitoring_ws", "ctl", "--url", api, "shell", "box-1"],
        stdin=terminal,
        stdout=terminal,
        stderr=terminal,
        env=env,
        start_new_session=True,
    )
    os.close(terminal)
    screen = trio.lowlevel.FdStream(master)
    try:
        with trio.fail_after(60):
            await screen.receive_some(4096)  # the remote shell said something: it runs
            await screen.send_all(b"echo $((6*7))\r")
            assert b"42" in await _read_fd_until(screen, b"42")
            await screen.send_all(b"exit 5\r")
            assert await process.wait() == 5
    finally:
        if process.returncode is None:
            process.kill()
        await screen.aclose()


async def test_ctl_shell_refused_says_why_and_exits_77(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    api = await _start(start_server, nursery, tmp_path)
    code, _, err = await ctl(api, "shell", "box-1", cwd=tmp_path)
    assert code == 77
    assert "shell sessions are off on this agent" in err
    code, _, err = await ctl(api, "shell", "nobody", cwd=tmp_path)
    assert code == 69
    assert "not connected" in err


async def test_ctl_forward_moves_10_mb_and_a_refused_destination_leaves_the_listener(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    port = await _echo_server(nursery)
    api = await _start(
        start_server, nursery, tmp_path, tunnels=TunnelSettings(allow=(("127.0.0.1", port),))
    )
    env = isolated_env(XDG_CONFIG_HOME=str(tmp_path))
    payload = os.urandom(10 << 20)
    argv = [sys.executable, "-m", "monitoring_ws", "ctl", "--url", api, "forward", "box-1"]
    for spec, allowed in ((f"0:127.0.0.1:{port}", True), (f"0:127.0.0.1:{port + 1}", False)):
        process = await trio.lowlevel.open_process([*argv, spec], stderr=subprocess.PIPE, env=env)
        assert process.stderr is not None
        try:
            with trio.fail_after(120):
                said = await _read_stream_until(process.stderr, b"(Ctrl-C stops)")
                local = int(said.split(b" -> ")[0].rsplit(b":", 1)[1])
                for _ in range(2 if allowed else 1):  # a second connection: the listener stays
                    stream = await trio.open_tcp_stream("127.0.0.1", local)
                    back = await _exchange(stream, payload if allowed else b"hello")
                    if allowed:
                        assert hashlib.sha256(back).digest() == hashlib.sha256(payload).digest()
                    else:
                        assert back == b""
                        said = await _read_stream_until(process.stderr, b"tunnels.allow")
                        assert b"not in tunnels.allow" in said
                assert process.returncode is None  # still listening
        finally:
            process.kill()
            await process.wait()


async def _read_stream_until(stream: trio.abc.ReceiveStream, marker: bytes) -> bytes:
    seen = b""
    while marker not in seen:
        data = await stream.receive_some(4096)
        assert data, seen
        seen += data
    return seen


async def _exchange(stream: trio.SocketStream, payload: bytes) -> bytes:
    """Send ``payload``, half-close, read everything back."""
    received = bytearray()
    async with stream, trio.open_nursery() as both:

        async def send() -> None:
            for at in range(0, len(payload), 1 << 16):
                await stream.send_all(payload[at : at + (1 << 16)])
            await stream.send_eof()

        both.start_soon(send)
        with contextlib.suppress(trio.BrokenResourceError):
            async for data in stream:
                received += data
    return bytes(received)


async def test_a_shell_idle_too_long_is_closed_with_timeout(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    quick = SessionSettings(shell=True, program="/bin/sh", idle_timeout_s=0.5)  # noqa: S604
    api = await _start(start_server, nursery, tmp_path, sessions=quick)
    with trio.fail_after(30):
        async with open_websocket_url(_ws_url(api, "box-1", kind="shell")) as ws:
            assert (await _control(ws))["type"] == "opened"
            closed = await _control(ws)
    assert closed["type"] == "closed"
    assert closed["reason"] == "timeout"
    assert "idleTimeoutS" in closed["message"]


async def test_a_reset_and_a_refused_connect_are_reported_as_such(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    async def reset(stream: trio.SocketStream) -> None:
        await stream.receive_some(100)
        linger = struct.pack("ii", 1, 0)
        stream.socket.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, linger)
        await trio.aclose_forcefully(stream)

    listeners = await nursery.start(functools.partial(trio.serve_tcp, reset, 0, host="127.0.0.1"))
    resetting = listeners[0].socket.getsockname()[1]
    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        closed_port = probe.getsockname()[1]
    allow = (("127.0.0.1", resetting), ("127.0.0.1", closed_port))
    api = await _start(start_server, nursery, tmp_path, tunnels=TunnelSettings(allow=allow))
    with trio.fail_after(30):
        url = _ws_url(api, "box-1", kind="tunnel", host="127.0.0.1", port=resetting)
        async with open_websocket_url(url) as ws:
            assert (await _control(ws))["type"] == "opened"
            await ws.send_message(b"hello")
            ended = await _control(ws)
        assert (ended["type"], ended["reason"]) == ("closed", "reset")
        url = _ws_url(api, "box-1", kind="tunnel", host="127.0.0.1", port=closed_port)
        async with open_websocket_url(url) as ws:
            refused = await _control(ws)
        assert refused["type"] == "refused"
        assert "refused" in refused["message"].lower()


async def test_a_shell_does_not_outlive_the_agents_connection(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    shells = SessionSettings(shell=True, program="/bin/sh")  # noqa: S604
    fleet.start(nursery, server.agent_urls[0], "box-1", {}, sessions=shells)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 1)
    with trio.fail_after(60):
        async with open_websocket_url(_ws_url(server.api_url, "box-1", kind="shell")) as ws:
            assert (await _control(ws))["type"] == "opened"
            await ws.send_message(b"echo PID=$$\r")
            seen = b""
            while not re.search(rb"PID=(\d+)\r", seen):  # the output, not the echoed $$
                seen += await _read_until(ws, b"\n")
            match = re.search(rb"PID=(\d+)\r", seen)
            assert match is not None
            pid = int(match.group(1))
            connection = server.gateway.registry.local("box-1")
            assert connection is not None
            connection.revoke()  # the agent's connection closes (it reconnects)
            closed = await _control(ws)
        assert (closed["type"], closed["reason"]) == ("closed", "error")
        while True:
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                break
            await trio.sleep(0.05)


async def test_a_shell_runs_as_the_user_its_settings_name(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    nobody = pwd.getpwnam("nobody")
    settings = SessionSettings(shell=True, program="/bin/sh", user="nobody")  # noqa: S604
    api = await _start(start_server, nursery, tmp_path, sessions=settings)
    with trio.fail_after(30):
        async with open_websocket_url(_ws_url(api, "box-1", kind="shell")) as ws:
            first = await _control(ws)
            if os.geteuid() != 0:  # an agent that is not root cannot switch: it says so
                assert first["type"] == "refused"
                assert "does not run as root" in first["message"]
                return
            assert first["type"] == "opened"
            await ws.send_message(b"echo UID=$(id -u)\r")
            seen = b""
            while not re.search(rb"UID=(\d+)\r", seen):
                seen += await _read_until(ws, b"\n")
    match = re.search(rb"UID=(\d+)\r", seen)
    assert match is not None
    assert int(match.group(1)) == nobody.pw_uid
