"""State databases and outboxes are readable by their owner only (they hold output, logs)."""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import Any

import pytest

from monitoring_ws.agent.outbox import Outbox
from monitoring_ws.clock import wall_ms
from monitoring_ws.gateway.enrollment import JoinTokens
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


def test_an_open_database_keeps_its_locks_when_another_connection_opens(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Closing any descriptor of a file drops this process's POSIX locks on it: tightening
    an existing file must not open it, or a SQLite connection another thread holds open
    (the gateway's reader of the enrollment records) loses its locks ("disk I/O error")."""
    tokens = JoinTokens(tmp_path)
    token = tokens.create(ttl_s=60, uses=5, agents=(), pin=None, now_ms=wall_ms())
    assert tokens.generation("web-1") is None  # the reader connection is open now
    opened: list[str] = []
    real_open = os.open

    def spying(path: Any, *args: Any, **kwargs: Any) -> int:
        opened.append(str(path))
        return real_open(path, *args, **kwargs)

    monkeypatch.setattr(os, "open", spying)
    for number in range(3):
        assert isinstance(tokens.redeem(token, f"web-{number}", wall_ms()), str)
        assert isinstance(tokens.generation(f"web-{number}"), str)
    assert str(tokens.path) not in opened  # tightened with chmod, never opened and closed
    assert oct(tokens.path.stat().st_mode & 0o777) == "0o600"
    tokens.close()
