"""The host in-process: another plugin's transport and routes join the gateway's server."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from monitoring_ws.host.run import run_host, transports_in_order

from .conftest import SECRET

PLUGIN = """
from quart import Blueprint
from monitoring_ws.transports import CommandOutcome


class EchoTransport:
    name = "echo"

    async def can_reach(self, agent_id, command):
        return agent_id.startswith("echo-")

    async def send_command(self, agent_id, command, args, timeout_s):
        return CommandOutcome("echo-1", True, 0, result={"echoed": dict(args)})

    def health(self):
        return {"ok": True}


class EchoPlugin:
    name = "echo"

    def __init__(self, settings):
        self.greeting = settings.get("greeting", "hi")
        self.stopped = False

    def transports(self):
        return (EchoTransport(),)

    def blueprints(self):
        blueprint = Blueprint("echo", __name__, url_prefix="/api/echo")

        @blueprint.get("/hello")
        async def hello():
            return {"greeting": self.greeting}

        return (blueprint,)

    async def run(self, host, *, task_status):
        task_status.started()

    async def shutdown(self):
        self.stopped = True
"""


@pytest.fixture
def echo_plugin(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    dist = tmp_path / "echo_plugin-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: echo-plugin\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[monitoring_ws.plugins]\necho = echo_plugin:EchoPlugin\n"
    )
    (tmp_path / "echo_plugin.py").write_text(PLUGIN)
    monkeypatch.syspath_prepend(str(tmp_path))


async def test_plugins_share_transports_and_routes(
    echo_plugin: None, nursery: trio.Nursery
) -> None:
    settings = {
        "websocket": {"enabled": True, "listen": "127.0.0.1:0", "master_secrets": [SECRET]},
        "echo": {"enabled": True, "greeting": "hello from a plugin"},
    }
    stop = trio.Event()
    plugins = await nursery.start(partial(run_host, settings, {"order": ["websocket"]}, stop=stop))
    by_name = {plugin.name: plugin for plugin in plugins}
    api = by_name["websocket"].running.api_url  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=api) as http:
        transports = (await http.get("/api/transports")).json()["transports"]
        assert [t["name"] for t in transports] == ["websocket", "echo"]  # order, then the rest
        assert (await http.get("/api/echo/hello")).json() == {"greeting": "hello from a plugin"}
        routed = await http.post(
            "/api/agents/echo-7/commands", json={"command": "ping", "args": {"a": 1}}
        )
        assert routed.json()["transport"] == "echo"
        assert routed.json()["result"] == {"echoed": {"a": 1}}
    stop.set()
    with trio.fail_after(10):
        while not by_name["echo"].stopped:  # type: ignore[attr-defined]
            await trio.sleep(0.05)


def test_ssm_joins_in_the_configured_order() -> None:
    assert [t.name for t in transports_in_order([], {"ssm": True})] == ["ssm"]
    assert transports_in_order([], {}) == ()
