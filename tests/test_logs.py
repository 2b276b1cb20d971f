"""``--log-format json``: one JSON object a line, with the agent's id, session and
address where a line is about one; no secret in any line."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import trio

from monitoring_ws.logformat import JsonFormatter

from .conftest import SECRET
from .gateway.agents import open_agent
from .support import processes
from .support.eventually import eventually


async def test_the_server_logs_json_lines_with_context(tmp_path: Path) -> None:
    port = processes.free_port()
    server = processes.server(tmp_path, port, "--log-format", "json")
    await trio.to_thread.run_sync(server.start)
    try:
        async with open_agent(f"ws://127.0.0.1:{port}/agent", "agent-j"):
            pass
        await eventually(
            lambda: "agent agent-j disconnected" in server.log.read_text(), timeout_s=10
        )
    finally:
        await trio.to_thread.run_sync(server.stop)
    text = server.log.read_text()
    lines = [json.loads(line) for line in text.splitlines()]  # every line is JSON
    connected = next(
        line for line in lines if line["message"].startswith("agent agent-j connected")
    )
    assert connected["agent_id"] == "agent-j"
    assert connected["level"] == "info"
    assert connected["logger"] == "monitoring_ws.gateway"
    assert len(connected["session_id"]) == 36
    assert connected["address"].startswith("127.0.0.1:")
    assert connected["ts"].endswith("Z")
    assert SECRET not in text


def test_the_json_formatter_keeps_exceptions_and_context() -> None:
    record = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed %s", ("once",), None)
    record.command_id = "c-1"
    failure = ValueError("boom")
    record.exc_info = (ValueError, failure, None)
    line = json.loads(JsonFormatter().format(record))
    assert line["message"] == "failed once"
    assert line["command_id"] == "c-1"
    assert "ValueError: boom" in line["exception"]
