"""The fence around plugins: the plugin distributions in plugins/ import only the plugin
API (``monitoring_ws.plugin_api``; agent command plugins ``monitoring_ws.agent.handlers``),
and the import contracts of pyproject.toml fail when a module crosses a layer."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from monitoring_ws import plugin_api

REPO = Path(__file__).resolve().parents[1]
#: What each kind of plugin may import of monitoring_ws.
ALLOWED = {"monitoring_ws.plugin_api", "monitoring_ws.agent.handlers"}


def monitoring_ws_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = {node.module}
        elif isinstance(node, ast.Import):
            names = {alias.name for alias in node.names}
        else:
            continue
        found |= {name for name in names if name.split(".")[0] == "monitoring_ws"}
    return found


@pytest.mark.parametrize(
    "source",
    sorted((REPO / "plugins").glob("*/src/**/*.py")),
    ids=lambda path: str(path.relative_to(REPO / "plugins")),
)
def test_plugin_distributions_import_only_the_plugin_api(source: Path) -> None:
    assert monitoring_ws_imports(source) <= ALLOWED


def test_every_name_the_plugin_api_lists_is_there() -> None:
    assert all(hasattr(plugin_api, name) for name in plugin_api.__all__)


@pytest.mark.parametrize(
    ("where", "line", "contract", "edge"),
    [
        (
            "agent/crossing.py",
            "from ..gateway import connection",
            "The agent imports no server package",
            "monitoring_ws.agent.crossing -> monitoring_ws.gateway",
        ),
        (
            "gateway/crossing.py",
            "from ..cluster import presence",
            "Layers:",
            "monitoring_ws.gateway.crossing -> monitoring_ws.cluster",
        ),
    ],
    ids=["agent-imports-gateway", "gateway-imports-cluster"],
)
def test_a_crossed_layer_fails_the_import_contracts(
    tmp_path: Path, where: str, line: str, contract: str, edge: str
) -> None:
    """A deliberate violation in a copy of the tree: ``lint-imports`` fails naming the
    contract and the import; the tree as it is passes."""
    copy = tmp_path / "repo"
    shutil.copytree(REPO / "src", copy / "src")
    shutil.copy(REPO / "pyproject.toml", copy / "pyproject.toml")
    lint = [str(Path(sys.executable).with_name("lint-imports"))]
    env = {"PYTHONPATH": str(copy / "src"), "PATH": "/usr/bin:/bin"}
    clean = subprocess.run(lint, cwd=copy, env=env, capture_output=True, text=True, check=False)
    assert clean.returncode == 0, clean.stdout + clean.stderr
    (copy / "src" / "monitoring_ws" / where).write_text(f"{line}  # a deliberate violation\n")
    broken = subprocess.run(lint, cwd=copy, env=env, capture_output=True, text=True, check=False)
    assert broken.returncode != 0
    assert contract in broken.stdout
    assert edge in broken.stdout.replace("\n", " ")
