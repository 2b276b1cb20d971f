"""State databases and outboxes are readable by their owner only (they hold output, logs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

from monitoring_ws.agent.outbox import Outbox
from monitoring_ws.clock import wall_ms
from monitoring_ws.gateway.store import StateStore
from monitoring_ws.protocol import MessageType


def modes(directory: Path) -> dict[str, int]:
    return {p.name: stat.S_IMODE(p.stat().st_mode) for p in directory.iterdir()}


async def test_state_database_and_outbox_are_0600(tmp_path: Path) -> None:
    old_umask = os.umask(0o022)  # the usual umask: files would be 0644
    try:
        store = StateStore(tmp_path / "state" / "state.sqlite3")
        store.add_telemetry("a-1", "metrics", '{"x": 1}')
        await store.commit(wall_ms())
        outbox = Outbox(tmp_path / "agent" / "outbox-a-1.sqlite3", max_bytes=1 << 20, max_age_s=60)
        outbox.put(MessageType.METRICS, {"values": {}})
        for directory in (tmp_path / "state", tmp_path / "agent"):
            found = modes(directory)
            assert any(name.endswith("-wal") for name in found), found
            assert set(found.values()) == {0o600}, found
            assert stat.S_IMODE(directory.stat().st_mode) == 0o700
        store.close()
    finally:
        os.umask(old_umask)


def test_an_existing_world_readable_database_is_tightened(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    StateStore(path).close()
    path.chmod(0o644)
    StateStore(path).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
