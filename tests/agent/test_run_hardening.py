"""``run`` hardening: word-for-word allow-lists and a minimal child environment."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring_ws.agent.handlers import discover
from monitoring_ws.agent.runner import CommandRunner
from monitoring_ws.agent.settings import SettingsError, load_settings
from monitoring_ws.protocol import Command

from .test_agent import settings_for


async def run(runner: CommandRunner, line: str) -> dict[str, object]:
    result = await runner.execute(Command(f"c-{line}", "run", {"command": line}, 10_000))
    assert result is not None
    if not result.ok:
        assert result.error is not None
        return {"error": result.error.code}
    assert isinstance(result.result, dict)
    return result.result


async def test_children_get_a_minimal_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MONITORING_WS_AGENT_KEY", "a" * 64)
    monkeypatch.setenv("MONITORING_WS_SECRET", "the-master-secret")
    monkeypatch.setenv("HTTPS_PROXY", "http://user:password@127.0.0.1:3128")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "aws-secret")
    monkeypatch.setenv("APP_ENV", "production")
    settings = settings_for(
        "ws://127.0.0.1:1/agent", allowed_commands=("env",), run_environment=("APP_ENV",)
    )
    output = await run(CommandRunner(settings, discover()), "env")
    assert isinstance(output["stdout"], str)
    names = {line.partition("=")[0] for line in output["stdout"].splitlines()}
    assert names <= {"PATH", "LANG", "APP_ENV", "PWD", "SHLVL", "_"}, names
    assert {"PATH", "LANG", "APP_ENV"} <= names
    for secret in ("a" * 64, "the-master-secret", "password", "aws-secret"):
        assert secret not in output["stdout"]


async def test_dot_dot_cannot_leave_the_named_directory(tmp_path: Path) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    (logs / "app.log").write_text("fine\n")
    (tmp_path / "secret").write_text("top secret\n")
    settings = settings_for("ws://127.0.0.1:1/agent", allowed_commands=(f"cat re:{logs}/.+",))
    runner = CommandRunner(settings, discover())
    assert (await run(runner, f"cat {logs}/app.log"))["stdout"] == "fine\n"
    assert await run(runner, f"cat {logs}/../secret") == {"error": "not_allowed"}
    assert await run(runner, f"cat {logs}/app.log {tmp_path}/secret") == {"error": "not_allowed"}


def test_settings_refuse_secrets_in_run_environment_and_old_patterns(tmp_path: Path) -> None:
    base = {"wsApiUrl": "wss://h/agent", "wsSecret": "s", "agentId": "a-1"}
    for name in ("MONITORING_WS_AGENT_KEY", "https_proxy", "ALL_PROXY"):
        with pytest.raises(SettingsError, match="never passed"):
            load_settings(None, **base, runEnvironment=[name])
    with pytest.raises(SettingsError, match="re: before each pattern word"):
        load_settings(None, **base, allowedCommands=["re:cat /var/log/app/[^ ]+"])
    settings = load_settings(None, **base, allowedCommands=["uptime", "cat re:/x/[^/]+"])
    assert settings.allowed_commands.allows_line("cat /x/y") == ["cat", "/x/y"]
