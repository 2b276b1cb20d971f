"""A short, bounded run of the protocol fuzzer (docs/security.md quotes a long one)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

HARNESS = Path(__file__).parent / "fuzz" / "fuzz_protocol.py"


def test_a_short_fuzz_run_finds_nothing(tmp_path: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(HARNESS),
            "-runs=20000",
            "-seed=7",
            "-max_len=4096",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert "Done 20000 runs" in output
    assert not list(tmp_path.iterdir())  # no crash or timeout artifact
