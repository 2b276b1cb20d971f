"""The wheel and the sdist build, and the wheel installed in a fresh venv runs
``monitoring-ws --version`` and the demo (its dependencies come from the development venv
through a path file, not from the network)."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import tarfile
import venv
import zipfile
from pathlib import Path

from monitoring_ws import __version__

from .conftest import REPO
from .support.processes import isolated_env


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


def test_the_wheel_installs_and_runs(tmp_path: Path) -> None:
    dist = tmp_path / "dist"
    built = run(
        sys.executable, "-m", "build", "--sdist", "--wheel", "--outdir", dist, REPO, cwd=tmp_path
    )
    assert built.returncode == 0, built.stderr[-3000:]
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
