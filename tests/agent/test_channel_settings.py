"""The agent's ``sessions`` and ``tunnels`` settings: off by default, clear errors, and the
allow-list checked by address (docs/sessions.md)."""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

import pytest
import trio

from monitoring_ws.agent.channel_settings import SessionSettings, TunnelSettings, resolve
from monitoring_ws.agent.settings import SettingsError, load_settings
from monitoring_ws.agent.shell import Refused, open_shell
from monitoring_ws.agent.tunnel import connect_tunnel
from monitoring_ws.protocol import ShellParams, TunnelParams


def _load(tmp_path: Path, **values: Any) -> Any:
    path = tmp_path / "agent.json"
    base = {"wsApiUrl": "ws://127.0.0.1:1/agent", "wsSecret": "s" * 32, "agentId": "a-1"}
    path.write_text(json.dumps({**base, **values}), encoding="utf-8")
    return load_settings(path)


def test_shells_and_tunnels_are_off_unless_the_settings_say_so(tmp_path: Path) -> None:
    settings = _load(tmp_path)
    assert settings.sessions.shell is False
    assert settings.tunnels.allow == ()
    on = _load(
        tmp_path,
        sessions={"shell": True, "program": "/bin/sh", "idleTimeoutS": 60},
        tunnels={"allow": ["127.0.0.1:5432", "[::1]:22", "DB.internal:80"]},
    )
    assert on.sessions == SessionSettings(True, "/bin/sh", None, 60.0)
    assert on.tunnels.allow == (("127.0.0.1", 5432), ("::1", 22), ("db.internal", 80))


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"sessions": {"shell": "yes"}}, "sessions.shell"),
        ({"sessions": {"program": "bash"}}, "sessions.program"),
        ({"sessions": {"idleTimeoutS": 0}}, "sessions.idleTimeoutS"),
        ({"sessions": {"shel": True}}, "unknown settings"),
        ({"sessions": True}, "sessions must be an object"),
        ({"tunnels": {"allow": "127.0.0.1:1"}}, "tunnels.allow"),
        ({"tunnels": {"allow": ["127.0.0.1"]}}, "not host:port"),
        ({"tunnels": {"allow": ["127.0.0.1:99999"]}}, "not host:port"),
        ({"tunnels": {"connectTimeoutS": -1}}, "connectTimeoutS"),
    ],
)
def test_a_wrong_setting_is_named(tmp_path: Path, values: dict[str, Any], named: str) -> None:
    with pytest.raises(SettingsError, match=named):
        _load(tmp_path, **values)


async def test_a_tunnel_is_checked_by_the_address_it_connects_to() -> None:
    async def answer(stream: trio.SocketStream) -> None:
        await stream.send_all(b"hi")
        await stream.aclose()

    async with trio.open_nursery() as nursery:
        serve = functools.partial(trio.serve_tcp, answer, 0, host="127.0.0.1")
        listeners = await nursery.start(serve)
        port = listeners[0].socket.getsockname()[1]
        # The entry names localhost; the destination asks for 127.0.0.1: one address.
        settings = TunnelSettings(allow=(("localhost", port),))
        assert ("127.0.0.1", port) in settings.allowed_addresses()
        stream = await connect_tunnel(settings, TunnelParams("127.0.0.1", port))
        assert await stream.receive_some(10) == b"hi"
        await stream.aclose()
        with pytest.raises(Refused, match=r"not in tunnels\.allow"):
            await connect_tunnel(settings, TunnelParams("127.0.0.1", port + 1))
        with pytest.raises(Refused, match="tunnels are off"):
            await connect_tunnel(TunnelSettings(), TunnelParams("127.0.0.1", port))
        with pytest.raises(Refused, match="does not resolve"):
            await connect_tunnel(settings, TunnelParams("no-such-host.invalid", port))
        nursery.cancel_scope.cancel()
    assert resolve("::1") == ["::1"]
    assert resolve("no-such-host.invalid") == []


async def test_a_shell_for_a_user_the_agent_cannot_become_is_refused() -> None:
    with pytest.raises(Refused, match="is not a user on this host"):
        await open_shell(
            SessionSettings(shell=True, program="/bin/sh", user="no-such-user-here"),  # noqa: S604
            ShellParams(),
        )
    with pytest.raises(Refused, match="shell sessions are off"):
        await open_shell(SessionSettings(), ShellParams())
