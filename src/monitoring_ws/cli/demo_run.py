"""``monitoring-ws demo``: a server, local agents and command round trips, on loopback."""

from __future__ import annotations

import json
import secrets
import tempfile
import time
import urllib.request
from functools import partial
from typing import Any

import trio

from ..agent.main import build_agent
from ..agent.settings import AgentSettings
from ..host.config import config_from_document
from ..host.server import Running, serve_host
from ..protocol import derive_agent_key

__all__ = ["run_demo"]


def _http(method: str, url: str, body: dict[str, Any] | None = None) -> tuple[int, Any]:
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(  # noqa: S310 - loopback URL of our own server
        url, data=data, method=method, headers={"Content-Type": "application/json"}
    )
    try:
        with urllib.request.urlopen(request, timeout=30) as response:  # noqa: S310
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


async def _call(
    method: str, url: str, body: dict[str, Any] | None = None
) -> tuple[int, Any, float]:
    start = time.perf_counter()
    status, answer = await trio.to_thread.run_sync(_http, method, url, body)
    return status, answer, (time.perf_counter() - start) * 1000


async def _demo(agents: int, keep: bool, listen: str, say: Any) -> None:
    secret = secrets.token_urlsafe(32)
    with tempfile.TemporaryDirectory(prefix="monitoring-ws-demo-") as state:
        document = {
            "server": {"listen": listen, "state_dir": state},
            "plugins": {"websocket": {"master_secrets": [secret]}},
        }
        config = config_from_document(document, "the demo's settings")
        async with trio.open_nursery() as nursery:
            running: Running = await nursery.start(
                partial(serve_host, config, handle_signals=False)
            )
            api = running.api_url
            say(f"server:  {api}  (agents connect to {running.agent_urls[0]})")
            say(f"dashboard: {api}/ui")
            fleet = []
            for number in range(1, agents + 1):
                agent_id = f"demo-agent-{number}"
                settings = AgentSettings(
                    url=running.agent_urls[0],
                    agent_id=agent_id,
                    key=derive_agent_key(secret, agent_id),
                    metrics_interval_s=5,
                )
                agent = build_agent(settings)
                fleet.append(agent)
                nursery.start_soon(agent.run)
            with trio.fail_after(15):
                for agent in fleet:
                    await agent.connected.wait()
            status, listing, ms = await _call("GET", f"{api}/api/websocket/agents")
            say(f"\nGET /api/websocket/agents -> {status} in {ms:.1f} ms")
            for info in listing["agents"]:
                commands = ", ".join(info["capabilities"]["commands"])
                say(f"  {info['agentId']:14} {info['remoteAddress']:22} commands: {commands}")
            for agent in fleet:
                agent_id = agent.settings.agent_id
                for command in ("ping", "collect_metrics"):
                    url = f"{api}/api/websocket/agents/{agent_id}/command"
                    status, answer, ms = await _call("POST", url, {"command": command, "args": {}})
                    say(f"\nPOST .../{agent_id}/command {command} -> {status} in {ms:.1f} ms")
                    say("  " + _summary(command, answer))
            # Without waiting: 202 and a record that follows the command.
            url = f"{api}/api/websocket/agents/{fleet[0].settings.agent_id}/command"
            body = {"command": "ping", "args": {}, "wait": False, "requestedBy": "demo"}
            status, accepted, ms = await _call("POST", url, body)
            say(f'\nPOST .../command ping "wait": false -> {status} in {ms:.1f} ms')
            location = f"{api}{accepted['location']}"
            with trio.fail_after(10):
                while (record := (await _call("GET", location))[1])["state"] == "sent":
                    await trio.sleep(0.02)
            say(f"GET {accepted['location']} -> {record['state']}, attempts {record['attempts']}")
            if keep:
                say(
                    f"\nup until Ctrl-C; open {api}/ui in a browser, or try:\n"
                    f"  curl {api}/api/websocket/agents\n"
                    f"  curl -X POST {api}/api/websocket/agents/demo-agent-1/command "
                    '-H \'Content-Type: application/json\' -d \'{"command": "ping", "args": {}}\''
                )
                await trio.sleep_forever()
            running.stop()
            for agent in fleet:
                agent.backoff.base_s = 3600  # no reconnect after the server's 1001
            await trio.sleep(0.5)
            nursery.cancel_scope.cancel()
        say("\nstopped cleanly")


def _summary(command: str, answer: dict[str, Any]) -> str:
    if "error" in answer and "ok" not in answer:
        return f"error: {answer['error']}"
    if command == "collect_metrics" and answer.get("ok"):
        result = answer["result"]
        return (
            f"ok: cpu {result['cpu']['percent']}% of {result['cpu']['count']}, "
            f"memory {result['memory']['percent']}%, load {result['load']}, "
            f"{result['processes']} processes (agent took {answer['durationMs']} ms)"
        )
    outcome = "ok" if answer.get("ok") else "failed"
    return f"{outcome}: {json.dumps(answer.get('result', answer.get('error')))}"


def run_demo(agents: int = 3, *, keep: bool = False, listen: str = "127.0.0.1:0") -> None:
    trio.run(_demo, agents, keep, listen, print)
