"""The agent's outbox and command journal: bounds, acks, streams, restarts."""

from __future__ import annotations

from pathlib import Path

import pytest

from monitoring_ws.agent import outbox as outbox_module
from monitoring_ws.agent.outbox import Outbox, OutboxError
from monitoring_ws.agent.settings import load_settings
from monitoring_ws.protocol import Delivery, MessageType


def _outbox(path: Path | None = None, **bounds: float) -> Outbox:
    return Outbox(
        path,
        max_bytes=int(bounds.get("max_bytes", 1 << 20)),
        max_age_s=bounds.get("max_age_s", 3600.0),
    )


def test_messages_come_back_in_order_until_acknowledged() -> None:
    outbox = _outbox()
    seqs = [outbox.put(MessageType.METRICS, {"n": n}) for n in range(5)]
    assert seqs == sorted(set(seqs))
    assert [p["n"] for _, _, p in outbox.after(0)] == [0, 1, 2, 3, 4]
    assert [p["n"] for _, _, p in outbox.after(seqs[1], limit=2)] == [2, 3]
    assert outbox.acknowledged(Delivery(outbox.stream, seqs[2])) == 3
    assert [p["n"] for _, _, p in outbox.after(0)] == [3, 4]
    # An ack about another stream (an outbox this agent no longer has) changes nothing.
    assert outbox.acknowledged(Delivery("s-other", seqs[4])) == 0
    assert len(outbox) == 2


def test_the_byte_bound_drops_the_oldest_and_counts_them(caplog: pytest.LogCaptureFixture) -> None:
    outbox = _outbox(max_bytes=100)
    for n in range(10):
        outbox.put(MessageType.LOG, {"entries": [], "pad": "x" * 20, "n": n})
    kept = [p["n"] for _, _, p in outbox.after(0)]
    assert kept == list(range(10 - len(kept), 10))  # the newest, in order
    assert outbox.bytes <= 100
    assert outbox.dropped == 10 - len(kept) > 0
    assert "outbox bound reached" in caplog.text


def test_the_age_bound_drops_what_is_too_old(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1_000_000_000_000]
    monkeypatch.setattr(outbox_module, "wall_ms", lambda: now[0])
    outbox = _outbox(max_age_s=60)
    outbox.put(MessageType.METRICS, {"n": "old"})
    now[0] += 61_000
    outbox.put(MessageType.METRICS, {"n": "new"})
    assert [p["n"] for _, _, p in outbox.after(0)] == ["new"]
    assert outbox.dropped == 1


def test_a_single_message_larger_than_the_bound_is_still_kept() -> None:
    outbox = _outbox(max_bytes=10)
    outbox.put(MessageType.COMMAND_RESULT, {"commandId": "c1", "result": "y" * 100})
    assert len(outbox) == 1


def test_contents_stream_and_numbers_survive_a_restart(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = _outbox(path)
    a = first.put(MessageType.METRICS, {"n": 1})
    first.put(MessageType.METRICS, {"n": 2})
    stream = first.stream
    first.close()  # as good as a kill: every put is committed when it returns
    second = _outbox(path)
    assert second.stream == stream
    assert [p["n"] for _, _, p in second.after(0)] == [1, 2]
    assert second.put(MessageType.METRICS, {"n": 3}) > a + 1  # numbers never go back
    assert second.bytes == sum(len(str(p).replace(" ", "")) for _, _, p in second.after(0))


def test_a_new_outbox_starts_a_new_stream(tmp_path: Path) -> None:
    assert _outbox(tmp_path / "a.sqlite3").stream != _outbox(tmp_path / "b.sqlite3").stream


def test_the_journal_runs_a_command_once_across_restarts(tmp_path: Path) -> None:
    path = tmp_path / "outbox.sqlite3"
    first = _outbox(path)
    assert first.start_command("c-1")
    assert not first.start_command("c-1")
    assert first.start_command("c-2")
    first.finish_command("c-2")
    first.close()  # "killed" while c-1 was running
    second = _outbox(path)
    assert second.interrupted_commands() == ["c-1"]
    assert second.interrupted_commands() == []  # reported once
    assert not second.start_command("c-1")
    assert not second.start_command("c-2")


def test_an_unwritable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(OutboxError, match="stateDir"):
        _outbox(blocker / "outbox.sqlite3")


def test_the_outbox_goes_where_systemd_says(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STATE_DIRECTORY", str(tmp_path / "systemd"))
    monkeypatch.delenv("MONITORING_WS_AGENT_STATE_DIR", raising=False)
    settings = load_settings(None, wsApiUrl="ws://127.0.0.1:1/agent", wsSecret="s", agentId="a1")
    assert settings.outbox_path == tmp_path / "systemd" / "outbox-a1.sqlite3"
    # The unit file asks systemd for that directory.
    unit = Path(__file__).parents[2] / "deploy" / "monitoring-ws-agent.service"
    assert "StateDirectory=monitoring-ws-agent" in unit.read_text()
    flagged = load_settings(
        None, wsApiUrl="ws://127.0.0.1:1/agent", wsSecret="s", agentId="a1", stateDir=tmp_path
    )
    assert flagged.outbox_path == tmp_path / "outbox-a1.sqlite3"
