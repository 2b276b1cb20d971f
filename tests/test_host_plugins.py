"""Monitoring-module plugins: discovery, enabled, disabled (never imported), broken."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

from monitoring_ws.configbase import ConfigError
from monitoring_ws.host.config import (
    MonitoringConfig,
    config_from_document,
    load_monitoring_config,
)
from monitoring_ws.host.plugins import (
    Plugin,
    PluginContext,
    PluginError,
    discover,
    load_enabled,
    validate_enabled,
)
from monitoring_ws.host.router import transports_in_order
from monitoring_ws.host.telemetry import TelemetryBus


@pytest.fixture
def extra_plugins(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Two more installed distributions (dist-info on sys.path): one broken, one explosive."""
    dist = tmp_path / "test_plugins-0.1.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: test-plugins\nVersion: 0.1\n")
    (dist / "entry_points.txt").write_text(
        "[monitoring_ws.plugins]\n"
        "broken = no_such_module_anywhere:Plugin\n"
        "explosive = explosive_plugin:Plugin\n"
    )
    (tmp_path / "explosive_plugin.py").write_text("raise RuntimeError('imported!')\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    yield tmp_path
    sys.modules.pop("explosive_plugin", None)


def _config(plugins: dict[str, Any], **tables: Any) -> MonitoringConfig:
    return config_from_document({"plugins": plugins, **tables}, "monitoring.toml", environ={})


def _context(config: MonitoringConfig) -> PluginContext:
    return PluginContext(
        config.server, config.cluster, TelemetryBus(), transports=config.transports
    )


def _load(plugins: dict[str, Any]) -> list[Plugin]:
    config = _config(plugins)
    return load_enabled(config, _context(config))


def test_discovery_lists_installed_plugins_and_their_state(extra_plugins: Path) -> None:
    found = {p.name: p for p in discover(_config({}))}
    assert {"websocket", "broken", "explosive"} <= set(found)
    assert found["websocket"].enabled  # built in: on unless disabled
    assert found["websocket"].distribution == "monitoring-ws"
    assert not found["broken"].enabled


def test_a_disabled_plugin_is_never_imported(extra_plugins: Path) -> None:
    assert _load({"explosive": {"enabled": False}, "websocket": {"enabled": False}}) == []
    assert "explosive_plugin" not in sys.modules


def test_an_enabled_plugin_that_fails_stops_start_up_clearly(extra_plugins: Path) -> None:
    off = {"websocket": {"enabled": False}}
    with pytest.raises(PluginError, match=r"plugin 'broken' .* failed to load: ModuleNotFound"):
        _load({"broken": {"enabled": True}, **off})
    with pytest.raises(PluginError, match=r"plugin 'explosive' .* RuntimeError: imported!"):
        _load({"explosive": {"enabled": True}, **off})
    with pytest.raises(PluginError, match="not installed: nowhere"):
        _load({"nowhere": {"enabled": True}})
    with pytest.raises(ConfigError, match="true or false"):
        _load({"websocket": {"enabled": "yes"}})


def test_the_websocket_plugin_provides_its_parts(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.delenv("MONITORING_WS_MASTER_SECRETS", raising=False)
    config = _config(
        {"websocket": {"master_secrets": ["s3cret"], "heartbeat_interval_ms": 5000}},
        server={"state_dir": str(tmp_path)},
    )
    [plugin] = load_enabled(config, _context(config))
    assert plugin.name == "websocket"
    assert [t.name for t in plugin.transports()] == ["websocket"]
    assert [r.path for r in plugin.websocket_routes()] == ["/agent"]
    assert [b.url_prefix for b in plugin.blueprints()] == ["/api/websocket"]


def test_a_plugin_table_with_an_unknown_key_names_it_and_the_file(tmp_path: Path) -> None:
    config = _config({"websocket": {"master_secrets": ["s"], "heartbeet_interval_ms": 1}})
    with pytest.raises(PluginError, match=r"monitoring.toml: \[plugins.websocket\] unknown key"):
        validate_enabled(config, _context(config))


def test_environment_switches(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.toml"
    path.write_text("[plugins.websocket]\nenabled = true\nheartbeat_interval_ms = 5000\n")
    assert load_monitoring_config(path, environ={}).enabled("websocket")
    off = load_monitoring_config(path, environ={"MONITORING_WS_PLUGIN_WEBSOCKET": "off"})
    assert not off.enabled("websocket")
    with pytest.raises(ConfigError, match="on or off"):
        load_monitoring_config(None, environ={"MONITORING_WS_PLUGIN_X": "maybe"})


def test_the_annotated_example_config_reads() -> None:
    """docs/monitoring.example.toml is what operators copy: it must load as written."""
    example = Path(__file__).resolve().parents[1] / "docs" / "monitoring.example.toml"
    config = load_monitoring_config(example, environ={})
    assert config.warnings == ()
    assert config.server.listen == "127.0.0.1:4000"
    assert validate_enabled(config, _context(config)) == ["websocket"]
    with_ssm = attrs.evolve(config, transports=attrs.evolve(config.transports, ssm=True))
    assert validate_enabled(with_ssm, _context(with_ssm)) == ["ssm", "websocket"]
    plugins = load_enabled(
        attrs.evolve(with_ssm, plugins={"websocket": {"enabled": False}}), _context(with_ssm)
    )
    [ssm] = transports_in_order(plugins, with_ssm.transports)
    assert ssm.name == "ssm"
    assert ssm.health()["commands"] == ["ping"]
