"""The host in-process: another plugin's transport and routes join the host's server."""

from __future__ import annotations

from functools import partial
from pathlib import Path

import httpx
import pytest
import trio

from monitoring_ws.host.config import config_from_document
from monitoring_ws.host.plugins import PluginContext, load_enabled
from monitoring_ws.host.router import transports_in_order
from monitoring_ws.host.server import Running, serve_host
from monitoring_ws.host.telemetry import TelemetryBus

from .conftest import SECRET
from .support.eventually import eventually

PLUGIN = """
from quart import Blueprint
from monitoring_ws.host.plugins import PluginBase
from monitoring_ws.transports import CommandOutcome


class EchoTransport:
    name = "echo"

    async def can_reach(self, agent_id, command):
        return agent_id.startswith("echo-")

    async def send_command(self, order):
        return CommandOutcome("echo-1", True, 0, result={"echoed": dict(order.args)})

    def health(self):
        return {"ok": True}


class EchoPlugin(PluginBase):
    name = "echo"

    def __init__(self, settings, context):
        self.greeting = settings.get("greeting", "hi")
        self.state_dir = context.server.state_dir
        self.drained = False

    def transports(self):
        return (EchoTransport(),)

    def blueprints(self):
        blueprint = Blueprint("echo", __name__, url_prefix="/api/echo")

        @blueprint.get("/hello")
        async def hello():
            return {"greeting": self.greeting}

        return (blueprint,)

    async def drain(self):
        self.drained = True
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
    echo_plugin: None, nursery: trio.Nursery, tmp_path: Path
) -> None:
    document = {
        "server": {"listen": "127.0.0.1:0", "state_dir": str(tmp_path)},
        "transports": {"order": ["websocket"]},
        "plugins": {
            "websocket": {"master_secrets": [SECRET]},
            "echo": {"enabled": True, "greeting": "hello from a plugin"},
        },
    }
    config = config_from_document(document, "monitoring.toml", environ={})
    running: Running = await nursery.start(partial(serve_host, config, handle_signals=False))
    echo = running.plugins["echo"]
    assert echo.state_dir == tmp_path  # type: ignore[attr-defined]
    async with httpx.AsyncClient(base_url=running.api_url) as http:
        transports = (await http.get("/api/transports")).json()["transports"]
        assert [t["name"] for t in transports] == ["websocket", "echo"]  # order, then the rest
        assert (await http.get("/api/echo/hello")).json() == {"greeting": "hello from a plugin"}
        routed = await http.post(
            "/api/agents/echo-7/commands", json={"command": "ping", "args": {"a": 1}}
        )
        assert routed.json()["transport"] == "echo"
        assert routed.json()["result"] == {"echoed": {"a": 1}}
        # The host keeps the record of a transport that keeps none.
        record = (await http.get("/api/commands/echo-1")).json()
        assert record["transport"] == "echo"
        assert record["state"] == "succeeded"
        assert record["requestedBy"]["address"] == "127.0.0.1"
    running.stop()
    await eventually(lambda: bool(echo.drained), timeout_s=10)  # type: ignore[attr-defined]


def test_ssm_is_a_plugin_enabled_by_the_transports_table() -> None:
    document = {"transports": {"ssm": True}, "plugins": {"websocket": {"enabled": False}}}
    config = config_from_document(document, "test")
    context = PluginContext(
        config.server, config.cluster, TelemetryBus(), transports=config.transports
    )
    plugins = load_enabled(config, context)
    assert [plugin.name for plugin in plugins] == ["ssm"]
    assert [t.name for t in transports_in_order(plugins, config.transports)] == ["ssm"]
    assert not config_from_document({}, "test").enabled("ssm")
