"""One settings shape: monitoring.toml's tables, the old [gateway] shape translated with a
warning, unknown keys named with their file, flags over the file, `config check`."""

from __future__ import annotations

import concurrent.futures
import subprocess
import sys
from pathlib import Path

import pytest

from monitoring_ws.configbase import ConfigError
from monitoring_ws.gateway.config import gateway_config_of
from monitoring_ws.host.config import load_monitoring_config

from .support.processes import isolated_env


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "monitoring.toml"
    path.write_text(text, encoding="utf-8")
    return path


def check(path: Path, *, from_environment: bool = False) -> subprocess.CompletedProcess[str]:
    """``config check PATH``; or, ``from_environment``, with ``MONITORING_WS_CONFIG=PATH``
    and no argument."""
    argv = [sys.executable, "-m", "monitoring_ws", "config", "check"]
    return subprocess.run(
        argv if from_environment else [*argv, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        env=isolated_env(MONITORING_WS_CONFIG=str(path)) if from_environment else isolated_env(),
        check=False,
    )


def test_the_old_gateway_shape_is_translated_with_a_warning(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        '[gateway]\nlisten = "127.0.0.1:4100"\nheartbeat_interval_ms = 5000\nssm = true\n'
        'transport_order = ["ssm", "websocket"]\n[cluster]\nnode_id = "a"\n',
    )
    config = load_monitoring_config(path, environ={})
    assert config.server.listen == "127.0.0.1:4100"
    assert config.transports.ssm is True
    assert config.transports.order == ("ssm", "websocket")
    assert config.cluster.node_id == "a"
    assert config.plugin_settings("websocket") == {"heartbeat_interval_ms": 5000}
    [warning] = config.warnings
    assert str(path) in warning
    assert "listen -> [server] listen" in warning
    assert "transport_order -> [transports] order" in warning
    assert "heartbeat_interval_ms -> [plugins.websocket] heartbeat_interval_ms" in warning
    assert gateway_config_of(config).heartbeat_interval_ms == 5000


def test_unknown_tables_and_keys_are_named_with_the_file(tmp_path: Path) -> None:
    cases = {
        '[server]\nlistn = "127.0.0.1:1"\n': "unknown key listn in [server]",
        "[servr]\n": "unknown table [servr]",
        "[cluster]\nworkers = 0\n": "workers must be > 0",
        "[server]\nlisten = 4000\n": "'listen' must be <class 'str'>",
        "[transports]\nordr = []\n": "unknown key ordr in [transports]",
        '[gateway]\nlisten = "1.2.3.4:1"\n[server]\nlisten = "127.0.0.1:2"\n': "both in",
        '[server]\nlisten = "0.0.0.0:4000"\n': "beyond loopback",
    }
    for text, message in cases.items():
        path = write(tmp_path, text)
        with pytest.raises(ConfigError) as caught:
            load_monitoring_config(path, environ={})
        assert str(path) in str(caught.value), text
        assert message in str(caught.value), (text, str(caught.value))


def test_flags_override_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, '[server]\nlisten = "127.0.0.1:4100"\nstate_dir = "a"\n')
    config = load_monitoring_config(
        path, {"server": {"listen": "127.0.0.1:4200", "state_dir": None}}, environ={}
    )
    assert config.server.listen == "127.0.0.1:4200"
    assert config.server.state_dir == Path("a")


def test_config_check_validates_without_starting(tmp_path: Path) -> None:
    texts = {
        "good": '[server]\nlisten = "127.0.0.1:4100"\n[plugins.websocket]\n',
        "old": '[gateway]\nlisten = "127.0.0.1:4100"\n',
        "bad": "[plugins.websocket]\nheartbeat_interval_ms = -1\n",
        "unknown": "[plugins.websocket]\nmax_frame_byte = 1\n",
        "ssm": '[transports]\nssm = true\nssm_safe_commands = ["run"]\n',
    }
    paths = {name: tmp_path / f"{name}.toml" for name in texts}
    for name, text in texts.items():
        paths[name].write_text(text, encoding="utf-8")
    with concurrent.futures.ThreadPoolExecutor(len(paths)) as pool:  # each starts Python
        from_environment = pool.submit(check, paths["bad"], from_environment=True)
        results = dict(zip(paths, pool.map(check, paths.values()), strict=True))
    assert from_environment.result().stderr == results["bad"].stderr  # MONITORING_WS_CONFIG
    assert results["good"].returncode == 0, results["good"].stderr
    assert "ok (plugins: websocket" in results["good"].stdout
    assert not (tmp_path / ".monitoring-ws").exists()  # nothing was created
    assert results["old"].returncode == 0
    assert "listen -> [server] listen" in results["old"].stderr
    bad = results["bad"]
    assert bad.returncode == 1
    assert f"{paths['bad']}: [plugins.websocket] heartbeat_interval_ms must be > 0" in bad.stderr
    assert "Traceback" not in bad.stderr
    assert "unknown key max_frame_byte" in results["unknown"].stderr
    assert results["ssm"].returncode == 1
    assert "'run' never goes to SSM" in results["ssm"].stderr
