"""One source per setting, and every setting documented: the keys the code accepts in each
table of monitoring.toml are exactly those in docs/monitoring.example.toml (set or
commented out) and in docs/gateway.md's tables, and the reverse."""

from __future__ import annotations

import re
from pathlib import Path

import attrs
import pytest

from monitoring_ws.gateway.config import own_keys
from monitoring_ws.host.config import ClusterSettings, ServerSettings, TransportSettings

DOCS = Path(__file__).resolve().parents[1] / "docs"
#: Set by ``serve --workers`` in each worker, never in a file.
NOT_IN_FILES = {"worker_index"}


def accepted() -> dict[str, set[str]]:
    def fields(cls: type) -> set[str]:
        return {f.name for f in attrs.fields(cls)} - NOT_IN_FILES

    return {
        "server": fields(ServerSettings),
        "transports": fields(TransportSettings),
        "cluster": fields(ClusterSettings),
        "plugins.websocket": set(own_keys()) | {"enabled"},
    }


def example_keys() -> dict[str, set[str]]:
    """Each table's keys in the annotated example, set or commented out (``# key =``)."""
    found: dict[str, set[str]] = {}
    table = None
    for line in (DOCS / "monitoring.example.toml").read_text().splitlines():
        header = re.fullmatch(r"#?\s*\[([a-z_.]+)\]\s*", line)
        if header:
            table = header.group(1)
            continue
        key = re.match(r"#?\s?([a-z_]+) = ", line)
        if key and table is not None:
            found.setdefault(table, set()).add(key.group(1))
    return found


def gateway_md_keys() -> dict[str, set[str]]:
    """docs/gateway.md, "Config file": the list of each host table's keys, and the
    websocket plugin's settings block."""
    text = (DOCS / "gateway.md").read_text()
    section = text.split("## Config file", 1)[1].split("\n## ", 1)[0]
    found: dict[str, set[str]] = {}
    for table, keys in re.findall(r"- `\[([a-z.]+)\]`: (.*?)(?:;\n|\.\n)", section, re.S):
        found[table] = set(re.findall(r"`([a-z_]+)`", keys))
    block = section.split("[plugins.websocket]", 2)[-1].split("```", 1)[0]
    found["plugins.websocket"] |= set(re.findall(r"^#? ?([a-z_]+) = ", block, re.M))
    return found


@pytest.mark.parametrize("table", sorted(accepted()))
def test_every_key_is_in_the_annotated_example(table: str) -> None:
    assert example_keys().get(table, set()) == accepted()[table]


@pytest.mark.parametrize("table", sorted(accepted()))
def test_every_key_is_in_the_gateway_docs(table: str) -> None:
    assert gateway_md_keys().get(table, set()) == accepted()[table]
