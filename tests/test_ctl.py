"""``monitoring-ws ctl`` as an operator runs it: a subprocess against a real server with
real agents."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import httpx
import trio

from .conftest import StartServer
from .support.eventually import eventually
from .support.processes import free_port, isolated_env
from .test_jobs import Fleet, all_connected

TOKEN = "ctl-test-token-0123456789"


async def ctl(
    api_url: str, *args: str, env: dict[str, str] | None = None, cwd: Path | None = None
) -> tuple[int, str, str]:
    done = await trio.run_process(
        [sys.executable, "-m", "monitoring_ws", "ctl", "--url", api_url, *args],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env or isolated_env(XDG_CONFIG_HOME=str(cwd or Path.cwd())),
    )
    return (
        done.returncode,
        done.stdout.decode(errors="surrogateescape"),
        done.stderr.decode(errors="surrogateescape"),
    )


async def test_agents_run_and_jobs_from_the_command_line(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    fleet = Fleet(tmp_path)
    allowed = ("echo re:.*", "sh -c re:.*")
    for index in range(3):
        role = "app" if index < 2 else "db"
        fleet.start(
            nursery, server.agent_urls[0], f"app-{index}", {"role": role}, allowed_commands=allowed
        )
    async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
        await all_connected(http, 3)
    url = server.api_url

    code, out, _ = await ctl(url, "agents", "ls", "role=app")
    assert code == 0
    assert out.splitlines()[0].split() == ["AGENT", "STATE", "VIA", "LABELS"]
    assert [line.split()[0] for line in out.splitlines()[1:]] == ["app-0", "app-1"]
    code, out, _ = await ctl(url, "-o", "json", "agents", "ls")
    assert [a["agentId"] for a in json.loads(out)] == ["app-0", "app-1", "app-2"]
    code, out, _ = await ctl(url, "agents", "label", "app-2", "tier=gold", "role-")
    assert (code, out.strip()) == (0, "app-2: role=db,tier=gold")  # role is the agent's own

    code, out, err = await ctl(
        url, "run", "app-0", "--", "sh", "-c", "echo hi; echo oops >&2; exit 3"
    )
    assert (code, out, err) == (3, "hi\n", "oops\n")
    code, out, _ = await ctl(url, "run", "app-0", "--", "echo", "a b; $HOME")
    assert (code, out) == (0, "a b; $HOME\n")  # a word stays a word: no shell in between
    code, _, err = await ctl(url, "run", "app-0", "--", "rm", "-rf", "/")
    assert code == 125  # refused by the agent's allow-list: nothing ran
    assert "not allowed" in err or "allow" in err
    code, _, err = await ctl(url, "run", "nobody", "--", "echo", "x")
    assert code == 69  # unreachable: no transport reaches it
    assert "404" in err

    code, out, _ = await ctl(url, "jobs", "run", "-l", "role=app", "--", "echo", "hello")
    lines = out.splitlines()
    assert sorted(lines[:-1]) == ["app-0: hello", "app-1: hello"]
    assert lines[-1].startswith("job j")
    assert "succeeded: 2 succeeded" in lines[-1]
    assert code == 0
    code, out, _ = await ctl(url, "-o", "json", "jobs", "ls")
    assert json.loads(out)[0]["state"] == "succeeded"
    code, out, _ = await ctl(url, "-o", "json", "commands", "ls", "--agent", "app-0")
    assert {record["agentId"] for record in json.loads(out)} == {"app-0"}


async def test_settings_come_from_flags_environment_and_a_private_file(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(api_tokens=[TOKEN])
    code, _, err = await ctl(server.api_url, "agents", "ls", cwd=tmp_path)
    assert code == 1
    assert "401" in err
    env = isolated_env(XDG_CONFIG_HOME=str(tmp_path), MONITORING_WS_TOKEN=TOKEN)
    assert (await ctl(server.api_url, "agents", "ls", env=env))[0] == 0
    config = tmp_path / "monitoring-ws" / "client.json"
    config.parent.mkdir()
    config.write_text(json.dumps({"url": server.api_url, "token": TOKEN}))
    config.chmod(0o644)
    env = isolated_env(XDG_CONFIG_HOME=str(tmp_path))
    code, _, err = await ctl(server.api_url, "agents", "ls", env=env)
    assert code == 2
    assert "chmod 600" in err
    config.chmod(0o600)
    assert (await ctl(server.api_url, "agents", "ls", env=env))[0] == 0
    token_file = tmp_path / "token"
    token_file.write_text(TOKEN + "\n")
    code, _, _ = await ctl(server.api_url, "--token-file", str(token_file), "agents", "ls")
    assert code == 0
    code, _, err = await ctl(f"http://127.0.0.1:{free_port()}", "agents", "ls", cwd=tmp_path)
    assert code == 69
    assert "cannot reach" in err


async def test_a_pinned_certificate_is_checked_before_the_token_is_sent(
    start_server: StartServer, tmp_path: Path
) -> None:
    server = await start_server(tls_self_signed=True, api_tokens=[TOKEN])
    assert server.api_url.startswith("https://")
    pin = server.fingerprint
    assert pin is not None
    env = isolated_env(XDG_CONFIG_HOME=str(tmp_path), MONITORING_WS_TOKEN=TOKEN)
    code, _, err = await ctl(server.api_url, "--cert-sha256", pin, "agents", "ls", env=env)
    assert (code, err) == (0, "")
    wrong = "00" * 32
    code, _, err = await ctl(server.api_url, "--cert-sha256", wrong, "agents", "ls", env=env)
    assert code == 69
    assert "does not present the pinned certificate: nothing was sent" in err
    code, _, err = await ctl(server.api_url, "agents", "ls", env=env)  # no pin: system CAs
    assert code == 69
    assert "CERTIFICATE_VERIFY_FAILED" in err


async def test_logs_events_metrics_and_completion(
    start_server: StartServer, nursery: trio.Nursery, tmp_path: Path
) -> None:
    server = await start_server()
    log_file = tmp_path / "app.log"
    log_file.write_text("")
    fleet = Fleet(tmp_path)
    fleet.start(
        nursery,
        server.agent_urls[0],
        "app-0",
        {},
        log_files=(log_file,),
        metrics_interval_s=0.2,
    )
    url = server.api_url
    async with httpx.AsyncClient(base_url=url, timeout=30) as http:
        await all_connected(http, 1)

        async def sampled() -> bool:
            return (await http.get("/api/agents/app-0")).json().get("metrics") is not None

        await eventually(sampled, timeout_s=30, what="a metrics sample")
    with log_file.open("a") as handle:
        handle.write("first line\n")

    async def logged() -> bool:
        return "first line" in (await ctl(url, "logs", "app-0"))[1]

    await eventually(logged, timeout_s=30, what="the first log line")
    # -f: the lines that come next, as they come.
    follower = await trio.lowlevel.open_process(
        [
            sys.executable,
            "-m",
            "monitoring_ws",
            "ctl",
            "--url",
            url,
            "logs",
            "app-0",
            "-n",
            "1",
            "-f",
        ],
        stdout=subprocess.PIPE,
        env=isolated_env(XDG_CONFIG_HOME=str(tmp_path)),
    )
    try:
        assert follower.stdout is not None
        seen = b""
        with trio.fail_after(30):
            while b"first line" not in seen:
                seen += await follower.stdout.receive_some()
            with log_file.open("a") as handle:
                handle.write("second line\n")
            while b"second line" not in seen:
                seen += await follower.stdout.receive_some()
    finally:
        follower.kill()
        await follower.wait()

    code, out, _ = await ctl(url, "-o", "json", "events", "--type", "agent_connected")
    assert code == 0
    assert [json.loads(line)["agentId"] for line in out.splitlines()] == ["app-0"]
    code, out, _ = await ctl(url, "metrics", "app-0")
    assert code == 0
    assert out.startswith("app-0 at ")
    code, out, _ = await ctl(url, "-o", "json", "metrics", "app-0")
    assert isinstance(json.loads(out), dict)

    code, script, _ = await ctl(url, "completion", "bash")
    assert code == 0
    probe = (
        script
        + "\nCOMP_WORDS=(monitoring-ws ctl --url http://x jobs ''); COMP_CWORD=5"
        + '\n_monitoring_ws; echo "${COMPREPLY[*]}"'
    )
    done = await trio.run_process(["bash", "-c", probe], capture_stdout=True)
    assert done.stdout.decode().split() == ["cancel", "ls", "run", "show", "--help"]
