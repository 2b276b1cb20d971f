"""The README's first command: ``monitoring-ws demo`` runs a server and agents, shows round
trips (waiting and not), and stops cleanly."""

from __future__ import annotations

from pathlib import Path

from .support.processes import isolated_env, run_cli


def test_the_demo_shows_round_trips_and_stops_cleanly(tmp_path: Path) -> None:
    result = run_cli(
        "demo", "--agents", "2", "--listen", "127.0.0.1:0", cwd=tmp_path, env=isolated_env()
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "demo-agent-1" in out
    assert "dashboard: http://127.0.0.1:" in out
    assert "demo-agent-2" in out
    assert out.count("command ping -> 200") == 2
    assert out.count("command collect_metrics -> 200") == 2
    assert '"wait": false -> 202' in out
    assert "-> succeeded, attempts 1" in out
    assert out.rstrip().endswith("stopped cleanly")
