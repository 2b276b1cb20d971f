"""The wheel and the sdist build, and the wheel installed in a fresh venv runs
``monitoring-ws --version`` and the demo (its dependencies come from the development venv
through a path file, not from the network)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tarfile
import tomllib
import venv
import zipfile
from importlib import metadata
from pathlib import Path

import httpx
import pytest
import trio
from deploy.build import closure
from packaging.requirements import Requirement

from monitoring_ws import __version__

from .conftest import REPO, SECRET, StartServer
from .support.processes import isolated_env
from .test_jobs import all_connected


def run(*args: str | Path, cwd: Path, timeout: float = 240) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(arg) for arg in args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
        cwd=cwd,
        env=isolated_env(),
    )


@pytest.fixture(scope="module")
def dist(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The wheel and the sdist, built once for the module."""
    where = tmp_path_factory.mktemp("dist")
    built = run(
        sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", where, REPO, cwd=where
    )
    assert built.returncode == 0, built.stderr[-3000:]
    return where


def test_the_wheel_installs_and_runs(tmp_path: Path, dist: Path) -> None:
    [wheel] = dist.glob("*.whl")
    [sdist] = dist.glob("*.tar.gz")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
    assert "monitoring_ws/websocket/plugin.py" in names
    # The dashboard's files ship in the wheel (no build step, no CDN).
    shipped = {Path(n).name for n in names if n.startswith("monitoring_ws/host/ui/")}
    assert {"index.html", "app.js", "style.css"} <= shipped
    assert {"terminal.js", "xterm.js", "xterm.css", "xterm.LICENSE"} <= shipped  # @xterm/xterm
    assert not [name for name in names if name.startswith("tests/")]
    with zipfile.ZipFile(wheel) as archive:
        [meta] = [name for name in names if name.endswith(".dist-info/METADATA")]
        described = archive.read(meta).decode()
        assert any(name.endswith(".dist-info/licenses/LICENSE") for name in names)
    assert "License-Expression: MIT" in described
    assert "Classifier: Framework :: Trio" in described
    # The agent's dependencies, and the server's behind an extra.
    assert "Requires-Dist: trio-websocket" in described
    assert "Requires-Dist: hypercorn>=0.17; extra == 'server'" in described
    with tarfile.open(sdist) as archive:
        members = archive.getnames()
    assert any(name.endswith("tests/data/protocol-test-vectors.json") for name in members)

    fresh = tmp_path / "fresh"
    venv.EnvBuilder(with_pip=False).create(fresh)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(fresh), "platbase": str(fresh)}))
    # The dependencies: the development venv's packages, behind the fresh venv's own.
    (site / "dependencies.pth").write_text(sysconfig.get_path("purelib") + "\n")
    python = fresh / "bin" / "python"
    installed = run(
        sys.executable,
        "-m",
        "pip",
        "--python",
        python,
        "install",
        "--no-deps",
        wheel,
        cwd=tmp_path,
    )
    assert installed.returncode == 0, installed.stderr[-3000:]
    where = run(python, "-c", "import monitoring_ws; print(monitoring_ws.__file__)", cwd=tmp_path)
    assert where.stdout.strip().startswith(str(site)), where.stdout  # the wheel's copy
    command = fresh / "bin" / "monitoring-ws"
    version = run(command, "--version", cwd=tmp_path)
    assert version.stdout.strip() == f"monitoring-ws {__version__}"
    demo = run(command, "demo", cwd=tmp_path, timeout=120)
    assert demo.returncode == 0, demo.stdout[-2000:] + demo.stderr[-2000:]
    assert "stopped cleanly" in demo.stdout
    assert os.access(command, os.X_OK)


def _only(distributions: set[str], into: Path) -> None:
    """Links to these distributions' top-level modules and metadata, nothing else, in
    ``into``."""
    into.mkdir()
    for name in distributions:
        for file in metadata.distribution(name).files or ():
            top = file.parts[0]
            if top.endswith(".data") or top in {"..", "__pycache__"}:  # metadata stays
                continue
            source = Path(str(file.locate())).parents[len(file.parts) - 1] / top
            target = into / top
            if not target.exists():
                target.symlink_to(source)


async def test_the_agent_alone_installs_with_only_its_own_dependencies(
    tmp_path: Path, dist: Path, start_server: StartServer, nursery: trio.Nursery
) -> None:
    """``pip install monitoring-ws`` is the agent: a venv holding the wheel and only what
    ``[project] dependencies`` needs runs the agent against a server; ``serve`` there
    says which extra it lacks."""
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    needed = set(closure([Requirement(written).name for written in declared]))
    assert not needed & {"hypercorn", "quart-trio", "boto3", "coredis", "cryptography"}
    _only(needed, tmp_path / "agent-deps")
    alone = tmp_path / "alone"
    venv.EnvBuilder(with_pip=False).create(alone)
    site = Path(sysconfig.get_path("purelib", vars={"base": str(alone), "platbase": str(alone)}))
    (site / "dependencies.pth").write_text(f"{tmp_path / 'agent-deps'}\n")
    [wheel] = dist.glob("*.whl")
    pip = (sys.executable, "-m", "pip", "--python", alone / "bin" / "python", "install")
    installed = run(*pip, "--no-deps", wheel, cwd=tmp_path)
    assert installed.returncode == 0, installed.stderr[-3000:]
    command = alone / "bin" / "monitoring-ws"
    serve = run(command, "serve", cwd=tmp_path)
    assert serve.returncode == 69
    assert "pip install 'monitoring-ws[server]'" in serve.stderr
    server = await start_server()
    settings = tmp_path / "agent.json"
    settings.write_text(
        json.dumps(
            {
                "wsApiUrl": server.agent_urls[0],
                "wsSecret": SECRET,
                "agentId": "alone-1",
                "stateDir": str(tmp_path / "agent-state"),
            }
        )
    )
    agent = await trio.lowlevel.open_process(
        [command, "agent", "--config", settings], env=isolated_env(), cwd=tmp_path
    )
    try:
        async with httpx.AsyncClient(base_url=server.api_url, timeout=30) as http:
            await all_connected(http, 1)
            answer = await http.post("/api/agents/alone-1/commands", json={"command": "ping"})
        assert answer.status_code == 200, answer.text
        assert answer.json()["result"]["pong"] is True
    finally:
        agent.kill()
        await agent.wait()
