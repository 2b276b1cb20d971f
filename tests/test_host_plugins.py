"""Monitoring-module plugins: discovery, enabled, disabled (never imported), broken."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from monitoring_ws.host.config import load_plugin_settings
from monitoring_ws.host.plugins import PluginError, discover, load_enabled


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


def test_discovery_lists_installed_plugins_and_their_state(extra_plugins: Path) -> None:
    found = {p.name: p for p in discover({"websocket": {"enabled": True}})}
    assert {"websocket", "broken", "explosive"} <= set(found)
    assert found["websocket"].enabled
    assert found["websocket"].distribution == "monitoring-ws"
    assert not found["broken"].enabled


def test_a_disabled_plugin_is_never_imported(extra_plugins: Path) -> None:
    assert load_enabled({"explosive": {"enabled": False}}) == []
    assert "explosive_plugin" not in sys.modules


def test_an_enabled_plugin_that_fails_stops_start_up_clearly(extra_plugins: Path) -> None:
    with pytest.raises(PluginError, match=r"plugin 'broken' .* failed to load: ModuleNotFound"):
        load_enabled({"broken": {"enabled": True}})
    with pytest.raises(PluginError, match=r"plugin 'explosive' .* RuntimeError: imported!"):
        load_enabled({"explosive": {"enabled": True}})
    with pytest.raises(PluginError, match="not installed: nowhere"):
        load_enabled({"nowhere": {"enabled": True}})
    with pytest.raises(PluginError, match="true or false"):
        load_enabled({"websocket": {"enabled": "yes"}})


def test_the_websocket_plugin_provides_its_transport(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MONITORING_WS_MASTER_SECRETS", raising=False)
    [plugin] = load_enabled(
        {
            "websocket": {
                "enabled": True,
                "master_secrets": ["s3cret"],
                "heartbeat_interval_ms": 5000,
            }
        }
    )
    assert plugin.name == "websocket"
    assert [t.name for t in plugin.transports()] == ["websocket"]


def test_settings_file_and_environment_switches(tmp_path: Path) -> None:
    path = tmp_path / "monitoring.toml"
    path.write_text("[plugins.websocket]\nenabled = true\nheartbeat_interval_ms = 5000\n")
    assert load_plugin_settings(path, environ={}) == {
        "websocket": {"enabled": True, "heartbeat_interval_ms": 5000}
    }
    switched = load_plugin_settings(path, environ={"MONITORING_WS_PLUGIN_WEBSOCKET": "off"})
    assert switched["websocket"]["enabled"] is False
    with pytest.raises(ValueError, match="on or off"):
        load_plugin_settings(None, environ={"MONITORING_WS_PLUGIN_X": "maybe"})


def test_the_annotated_example_config_reads() -> None:
    """docs/monitoring.example.toml is what operators copy: it must load as written."""
    from monitoring_ws.gateway.config import load_config  # noqa: PLC0415
    from monitoring_ws.host.config import (  # noqa: PLC0415
        load_plugin_settings,
        load_transport_options,
    )
    from monitoring_ws.host.run import transports_in_order  # noqa: PLC0415

    example = Path(__file__).resolve().parents[1] / "docs" / "monitoring.example.toml"
    settings = load_plugin_settings(example, environ={})
    websocket = {k: v for k, v in settings["websocket"].items() if k != "enabled"}
    assert load_config(None, **websocket).listen == "127.0.0.1:4000"
    options = load_transport_options(example)
    [ssm] = transports_in_order([], {**options, "ssm": True})
    assert ssm.name == "ssm"
    assert ssm.health()["commands"] == ["ping"]
