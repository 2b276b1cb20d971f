"""Output as it happens, end to end: real agents stream through a real server to
``GET /api/commands/:id/output`` and to ``monitoring-ws ctl run`` run as a subprocess
(docs/api.md, "Command output"; docs/cli.md)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import trio

from monitoring_ws.agent.client import Agent
from monitoring_ws.agent.handlers import discover
from monitoring_ws.agent.runner import CommandRunner
from monitoring_ws.agent.settings import AgentSettings
from monitoring_ws.protocol import FEATURE_OUTPUT, derive_agent_key

from .conftest import SECRET, StartServer
from .support.eventually import eventually
from .support.processes import isolated_env
from .test_ctl import ctl
from .test_jobs import Fleet, all_connected

ALLOWED = ("sh -c re:.*", "sleep re:[0-9]+", "echo re:.*")
COUNT_TO_THREE = "for i in 1 2 3; do echo $i; sleep 1; done"


@contextlib.asynccontextmanager
async def _process(argv: list[str], **options: Any) -> AsyncIterator[trio.Process]:
    """A subprocess, killed if the test leaves before it ends."""
    process = await trio.lowlevel.open_process(argv, **options)
    try:
        yield process
    finally:
        if process.returncode is None:
            process.kill()
        with trio.CancelScope(shield=True):
            await process.wait()


async def _lines(url: str, command_id: str, **params: Any) -> list[dict[str, Any]]:
    async with httpx.AsyncClient(base_url=url, timeout=60) as http:
        answer = await http.get(f"/api/commands/{command_id}/output", params=params)
        assert answer.status_code == 200, answer.text
        assert answer.headers["content-type"].startswith("application/x-ndjson")
        return [json.loads(line) for line in answer.text.splitlines()]


async def _latest(http: httpx.AsyncClient, agent_id: str) -> dict[str, Any]:
    records = (await http.get("/api/commands", params={"agentId": agent_id, "limit": 1})).json()
    return records["commands"][0] if records["commands"] else {}


async def test_ctl_run_prints_as_it_comes_and_exits_with_the_remote_code(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    fleet.start(nursery, server.agent_urls[0], "app-0", {"role": "app"}, allowed_commands=ALLOWED)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 1)
        command = [sys.executable, "-m", "monitoring_ws", "ctl", "--url", server.api_url]
        async with _process(
            [*command, "run", "app-0", "--", "sh", "-c", COUNT_TO_THREE],
            stdout=subprocess.PIPE,  # a pipe: ctl flushes each chunk anyway
            env=isolated_env(XDG_CONFIG_HOME=str(tmp_path)),
        ) as process:
            assert process.stdout is not None
            first = b""
            with trio.fail_after(30):
                while not first.endswith(b"\n"):
                    first += await process.stdout.receive_some(1)
            # "1" is printed while the remote command still runs.
            assert first == b"1\n"
            assert (await _latest(http, "app-0"))["state"] == "sent"
            rest = b""
            with trio.fail_after(30):
                async for data in process.stdout:
                    rest += data
                await process.wait()
        assert (process.returncode, first + rest) == (0, b"1\n2\n3\n")
        record = await _latest(http, "app-0")
        assert record["streamOutput"] is True
        assert record["result"]["result"] == {
            "exitCode": 0,
            "stdoutBytes": 6,
            "stderrBytes": 0,
            "chunks": 3,
            "streamed": True,
        }
        # What was streamed is kept: read again without following, then after a seq.
        lines = await _lines(server.api_url, record["commandId"])
        assert [line.get("text") for line in lines if line["type"] == "output"] == [
            "1\n",
            "2\n",
            "3\n",
        ]
        assert lines[-1]["type"] == "end"
        assert lines[-1]["record"]["state"] == "succeeded"
        later = await _lines(server.api_url, record["commandId"], after=2)
        assert [line.get("seq") for line in later] == [3, None]

    url = server.api_url
    code, out, err = await ctl(
        url, "run", "app-0", "--", "sh", "-c", "echo out; echo err >&2; exit 3"
    )
    assert (code, out, err) == (3, "out\n", "err\n")
    code, out, _ = await ctl(url, "-o", "json", "run", "app-0", "--", "echo", "hi")
    answer = json.loads(out)
    assert code == 0
    assert answer["record"]["state"] == "succeeded"
    assert [line["text"] for line in answer["output"]] == ["hi\n"]
    # Bytes that are not UTF-8 arrive as they were written.
    code, out, _ = await ctl(url, "run", "app-0", "--", "sh", "-c", "printf '\\377\\001x'")
    assert (code, out.encode(errors="surrogateescape")) == (0, b"\xff\x01x")
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        record = await _latest(http, "app-0")
    [chunk] = [line for line in await _lines(url, record["commandId"]) if line["type"] == "output"]
    assert chunk["base64"] == "/wF4"


async def test_ctrl_c_cancels_the_remote_command_and_its_record_says_so(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    fleet.start(nursery, server.agent_urls[0], "app-0", {}, allowed_commands=ALLOWED)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 1)
        command = [sys.executable, "-m", "monitoring_ws", "ctl", "--url", server.api_url]
        async with _process(
            [*command, "run", "app-0", "--", "sh", "-c", "echo started; sleep 30"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=isolated_env(XDG_CONFIG_HOME=str(tmp_path)),
        ) as process:
            assert process.stdout is not None
            assert process.stderr is not None
            with trio.fail_after(30):
                assert await process.stdout.receive_some() == b"started\n"
            process.send_signal(signal.SIGINT)  # what Ctrl-C sends
            with trio.fail_after(30):
                await process.wait()
            err = await process.stderr.receive_some()
        assert process.returncode == 130
        assert b"cancelling command" in err
        record = await _latest(http, "app-0")
        assert record["state"] == "cancelled"

        async def told() -> bool:  # the agent stopped it, and said so
            answer = (await _latest(http, "app-0")).get("result") or {}
            return (answer.get("error") or {}).get("code") == "cancelled"

        await eventually(told, timeout_s=30, what="the agent's cancelled answer")


async def test_a_job_prints_each_agents_output_prefixed_then_a_summary(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    for index in range(10):
        fleet.start(
            nursery, server.agent_urls[0], f"app-{index}", {"role": "app"}, allowed_commands=ALLOWED
        )
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 10)
    code, out, _ = await ctl(
        server.api_url, "run", "-l", "role=app", "--", "sh", "-c", "echo one; printf two"
    )
    lines = out.splitlines()
    expected = sorted(f"app-{i}: {word}" for i in range(10) for word in ("one", "two"))
    assert sorted(lines[:-1]) == expected  # "two" has no newline: flushed at the end
    assert lines[-1].startswith("job j")
    assert "succeeded: 10 succeeded" in lines[-1]
    assert code == 0
    code, out, _ = await ctl(server.api_url, "run", "-l", "role=app", "--", "sh", "-c", "exit 1")
    assert code == 1  # the job succeeded (every command ran), but they exited 1
    assert "(10 exited non-zero: app-0, app-1," in out.splitlines()[-1]


async def test_the_window_keeps_the_last_output_and_says_what_was_dropped(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server(output_window_bytes=64 << 10)
    fleet = Fleet(tmp_path)
    fleet.start(nursery, server.agent_urls[0], "app-0", {}, allowed_commands=ALLOWED)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=60) as http:
        await all_connected(http, 1)
        body = {
            "command": "run",
            "args": {"command": "sh -c 'seq 1 100000'"},
            "streamOutput": True,
        }
        answer = (await http.post("/api/agents/app-0/commands", json=body)).json()
        assert answer["ok"], answer
        command_id = answer["commandId"]
        lines = await _lines(server.api_url, command_id)
        assert lines[0]["type"] == "dropped"
        assert lines[0]["fromSeq"] == 1
        chunks = [line for line in lines if line["type"] == "output"]
        assert chunks[0]["seq"] == lines[0]["toSeq"] + 1
        kept = "".join(chunk["text"] for chunk in chunks)
        assert kept.endswith("\n99999\n100000\n")
        assert len(kept) <= (64 << 10) * 9 // 8 + 65536
        assert lines[-1]["type"] == "end"
        # Bad requests get a clear answer.
        bad = await http.get(f"/api/commands/{command_id}/output", params={"after": "x"})
        assert (bad.status_code, bad.json()["error"]["code"]) == (400, "bad_request")
        bad = await http.get(f"/api/commands/{command_id}/output", params={"follow": "maybe"})
        assert bad.status_code == 400
        missing = await http.get("/api/commands/no-such-command/output")
        assert (missing.status_code, missing.json()["error"]["code"]) == (404, "unknown_command")


async def test_an_agent_without_the_feature_answers_as_before_and_its_output_is_served(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path, monkeypatch: Any
) -> None:
    """An agent written from protocol v1 alone never sees ``streamOutput``: its result
    carries the output, which the output route serves once it has ended."""
    server = await start_server()
    settings = AgentSettings(
        url=server.agent_urls[0],
        agent_id="old-1",
        key=derive_agent_key(SECRET, "old-1"),
        state_dir=tmp_path / "agents",
        allowed_commands=ALLOWED,
    )
    old = Agent(settings, CommandRunner(settings, discover()))
    seen: list[bool] = []
    original = CommandRunner.execute

    async def execute(self: CommandRunner, command: Any) -> Any:
        seen.append(command.stream_output)
        return await original(self, command)

    monkeypatch.setattr(CommandRunner, "execute", execute)
    monkeypatch.setattr("monitoring_ws.agent.client.FEATURE_OUTPUT", "not-output")
    nursery.start_soon(old.run)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 1)
        agent = (await http.get("/api/agents/old-1")).json()
        assert FEATURE_OUTPUT not in agent["details"]["websocket"]["capabilities"]["features"]
        body = {"command": "run", "args": {"command": "echo plain"}, "streamOutput": True}
        answer = (await http.post("/api/agents/old-1/commands", json=body)).json()
    assert seen == [False]
    assert answer["result"]["stdout"] == "plain\n"
    lines = await _lines(server.api_url, answer["commandId"], follow="true")
    assert [line["type"] for line in lines] == ["output", "end"]
    assert lines[0]["text"] == "plain\n"


async def test_a_quiet_follower_gets_keepalive_lines(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path, monkeypatch: Any
) -> None:
    """Proxies close idle responses: a follower that waited ``KEEPALIVE_S`` for nothing is
    sent a ``keepalive`` line (shortened here; 15 s in service)."""
    monkeypatch.setattr("monitoring_ws.host.api.output.KEEPALIVE_S", 0.3)
    server = await start_server()
    fleet = Fleet(tmp_path)
    fleet.start(nursery, server.agent_urls[0], "app-0", {}, allowed_commands=ALLOWED)
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 1)
        body = {"command": "run", "args": {"command": "sleep 2"}, "streamOutput": True}
        body |= {"wait": False}
        command_id = (await http.post("/api/agents/app-0/commands", json=body)).json()["commandId"]
    lines = await _lines(server.api_url, command_id, follow="true")
    kinds = [line["type"] for line in lines]
    assert kinds[-1] == "end"
    assert 2 <= kinds.count("keepalive") <= 10
    assert lines[-1]["record"]["state"] == "succeeded"
