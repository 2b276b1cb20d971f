"""A server killed with -9 while ``ctl run`` follows a command's output, and started again
on the same port: the client prints every line once, in order, and exits with the code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import trio

from ..support import processes

CTL = (sys.executable, "-m", "monitoring_ws", "ctl")
LINES = 40
SCRIPT = f"for i in $(seq 1 {LINES}); do echo line-$i; sleep 0.1; done; exit 7"


async def test_a_server_restart_mid_command_loses_no_line(tmp_path: Path) -> None:
    port = processes.free_port()
    server = processes.server(tmp_path, port)
    agent = processes.agent(tmp_path, port, "streamer", allowedCommands=["sh -c re:.*"])
    await trio.to_thread.run_sync(server.start)
    await trio.to_thread.run_sync(agent.start)
    url = f"http://127.0.0.1:{port}"
    client = await trio.lowlevel.open_process(
        [*CTL, "--url", url, "run", "--timeout", "120", "streamer", "--", "sh", "-c", SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=processes.isolated_env(XDG_CONFIG_HOME=str(tmp_path)),
    )
    printed = b""
    try:
        assert client.stdout is not None
        with trio.fail_after(60):
            while b"line-10\n" not in printed:
                data = await client.stdout.receive_some()
                assert data, "ctl ended early"
                printed += data
        await trio.to_thread.run_sync(server.kill)  # mid-command: chunks in flight, no ack
        await trio.sleep(0.5)
        await trio.to_thread.run_sync(server.start)  # same port, same state directory
        with trio.fail_after(120):
            async for data in client.stdout:
                printed += data
            await client.wait()
    finally:
        if client.returncode is None:
            client.kill()
        await trio.to_thread.run_sync(agent.stop)
        await trio.to_thread.run_sync(server.stop)
    assert client.stderr is not None
    assert printed.decode().splitlines() == [f"line-{i}" for i in range(1, LINES + 1)]
    assert client.returncode == 7
