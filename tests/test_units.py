"""The systemd units in deploy/: hardened (``systemd-analyze security --offline``, which
reads the files without a running systemd), and not restarted on a configuration error."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO

UNITS = {"monitoring-ws.service": 2.0, "monitoring-ws-agent.service": 2.0}


@pytest.mark.parametrize(("unit", "most"), UNITS.items())
def test_each_unit_is_hardened_and_stops_on_a_configuration_error(unit: str, most: float) -> None:
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
