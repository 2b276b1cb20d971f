"""The systemd units in deploy/: hardened (``systemd-analyze security --offline``, which
reads the files without a running systemd), and not restarted on a configuration error."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from monitoring_ws.install.layout import render_unit

from .conftest import REPO

UNITS = {"monitoring-ws.service": 2.0, "monitoring-ws-agent.service": 2.0}


@pytest.mark.parametrize(("unit", "most"), [*UNITS.items(), ("installed", 2.0)])
def test_each_unit_is_hardened_and_stops_on_a_configuration_error(
    unit: str, most: float, tmp_path: Path
) -> None:
    """Also the agent's unit as install.sh and the .deb write it (a system user instead of
    a dynamic one, the launcher, the cache directory releases unpack into)."""
    if unit == "installed":
        path = tmp_path / "monitoring-ws-agent.service"
        launcher = Path("/usr/bin/monitoring-ws-agent")
        path.write_text(render_unit(launcher, config=Path("/etc/monitoring-ws/agent.json")))
    else:
        path = REPO / "deploy" / unit
    text = path.read_text()
    assert "RestartPreventExitStatus=78" in text  # EX_CONFIG: a bad file is not retried
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed here (Debian's systemd package has it)")
    done = subprocess.run(
        [analyze, "security", "--offline=true", "--no-pager", str(Path(path))],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    found = re.search(r"Overall exposure level for \S+: ([0-9.]+)", done.stdout + done.stderr)
    assert found is not None, done.stdout[-2000:] + done.stderr[-2000:]
    assert float(found.group(1)) <= most, done.stdout[-3000:]
