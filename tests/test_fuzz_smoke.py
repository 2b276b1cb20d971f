"""Short, bounded runs of the protocol and listener fuzzers (docs/security.md quotes long
ones)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).parent / "fuzz"


@pytest.mark.parametrize(
    ("harness", "runs", "max_len"),
    [("fuzz_protocol.py", 10_000, 4096), ("fuzz_listener.py", 1_500, 8192)],
)
def test_a_short_fuzz_run_finds_nothing(
    harness: str, runs: int, max_len: int, tmp_path: Path
) -> None:
    result = subprocess.run(
        [
            sys.executable,
            str(FUZZ / harness),
            f"-runs={runs}",
            "-seed=7",
            f"-max_len={max_len}",
            f"-artifact_prefix={tmp_path}/",
        ],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    assert f"Done {runs} runs" in output
    assert not list(tmp_path.iterdir())  # no crash or timeout artifact
