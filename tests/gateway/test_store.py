"""The state database and command-record values: transitions, persistence, retention,
schema and write failures."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import trio
import trio.testing

from monitoring_ws.gateway.output_table import OutputRow, OutputTable
from monitoring_ws.gateway.store import StateStore, StoreError
from monitoring_ws.protocol import CommandError, CommandResult, Delivery
from monitoring_ws.transports import Requester
from monitoring_ws.transports.records import CommandRecord, CommandState

NOW = 1_764_100_000_000


def _record(command_id: str = "c-1", **changes: object) -> CommandRecord:
    record = CommandRecord(
        command_id=command_id,
        agent_id="a-1",
        command="ping",
        args={"x": 1},
        timeout_ms=1000,
        transport="websocket",
        requested_by=Requester("127.0.0.1", "token:abc", "job"),
        created_ms=NOW,
        updated_ms=NOW,
    )
    for name, value in changes.items():
        setattr(record, name, value)
    return record


def _ok(command_id: str = "c-1", ok: bool = True, code: str | None = None) -> CommandResult:
    error = None if code is None else CommandError(code, "why")
    return CommandResult(command_id, ok, 5, result={"pong": True} if ok else None, error=error)


def test_a_record_round_trips_through_json() -> None:
    record = _record()
    record.sent(NOW + 1)
    record.answered(_ok(), NOW + 2)
    assert CommandRecord.from_json(record.to_json()) == record


@pytest.mark.parametrize(
    ("before", "result", "after", "late"),
    [
        (CommandState.SENT, _ok(), CommandState.SUCCEEDED, False),
        (CommandState.SENT, _ok(ok=False, code="boom"), CommandState.FAILED, False),
        (CommandState.TIMED_OUT, _ok(), CommandState.SUCCEEDED, True),
        (CommandState.AGENT_DISCONNECTED, _ok(), CommandState.SUCCEEDED, True),
        (
            CommandState.SENT,
            _ok(ok=False, code="interrupted"),
            CommandState.AGENT_DISCONNECTED,
            False,
        ),
        (CommandState.CANCELLED, _ok(ok=False, code="cancelled"), CommandState.CANCELLED, True),
    ],
)
def test_results_move_records(
    before: CommandState, result: CommandResult, after: CommandState, late: bool
) -> None:
    record = _record()
    if before in {CommandState.TIMED_OUT, CommandState.CANCELLED}:
        record.finish(before, NOW + 1)
    else:
        record.state = before
    assert record.answered(result, NOW + 5)
    assert record.state is after
    assert record.result == result
    assert record.finished_ms is not None
    assert record.late is (late and before is not CommandState.CANCELLED)
    assert not record.answered(result, NOW + 6)  # a second answer changes nothing


async def test_writes_are_stored_together_and_read_back(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    store = StateStore(path)
    record = _record()
    store.put_command(record)
    store.add_telemetry("a-1", "metrics", '{"payload":{}}')
    store.put_mark("a-1", Delivery("s", 4))
    assert store.pending == 3
    await store.commit()
    assert store.pending == 0
    record.sent(NOW + 1)  # a later change overwrites the stored row at the next commit
    store.put_command(record)
    await store.commit()
    store.close()
    reopened = StateStore(path)
    assert reopened.load_marks() == {"a-1": Delivery("s", 4)}
    [open_record] = reopened.load_open_commands()
    assert open_record.state is CommandState.SENT
    assert await reopened.get_command("c-1") == open_record
    [item] = await reopened.telemetry(0, 10)
    assert item["agentId"] == "a-1"
    assert item["envelope"] == {"payload": {}}
    assert reopened.counts() == {"commands": 1, "telemetry": 1, "delivery": 1, "output": 0}


async def test_retention_prunes_what_is_old(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    old, fresh = _record("old"), _record("fresh")
    old.finish(CommandState.SUCCEEDED, NOW - 10_000)
    fresh.finish(CommandState.SUCCEEDED, NOW)
    store.put_command(old)
    store.put_command(fresh)
    for when in range(NOW - 10_000, NOW - 5_000, 1_000):  # five old commits
        store.add_telemetry("a-1", "metrics", "{}")
        store.put_mark("gone", Delivery("s", 1))
        await store.commit(now_ms=when)
    store.add_telemetry("a-1", "metrics", "{}")
    await store.commit(now_ms=NOW)
    assert await store.prune(NOW, 5_000, 5_000) == 1 + 5 + 1
    assert await store.get_command("old") is None
    assert await store.get_command("fresh") is not None
    [kept] = await store.telemetry(0, 10)
    assert kept["receivedAt"] == NOW
    assert store.load_marks() == {}


async def test_command_output_is_pruned_by_age_then_by_bytes(tmp_path: Path) -> None:
    """Chunks go with their records' retention, then the oldest past ``output_max_bytes``;
    a command's window cut drops its oldest chunks at the next commit."""
    store = StateStore(tmp_path / "state.sqlite3")

    def chunk(command_id: str, seq: int, size: int) -> OutputRow:
        return OutputRow(command_id, seq, "stdout", 0, (seq - 1) * size, False, "x" * size)

    store.output.add(chunk("old", 1, 100))
    await store.commit(now_ms=NOW - 10_000)
    for seq in range(1, 5):
        store.output.add(chunk("new", seq, 100))
    await store.commit(now_ms=NOW)
    assert store.output.bytes == 500
    assert await store.prune(NOW, 5_000, 10**9, None, 250) == 1 + 2  # by age, then bytes
    assert store.output.bytes == 200
    assert [row.seq for row in await store.read(OutputTable.read, "new", 0, 10)] == [3, 4]
    store.output.cut("new", 300)  # the window: chunks that start before byte 300
    await store.commit(now_ms=NOW)
    assert [row.seq for row in await store.read(OutputTable.read, "new", 0, 10)] == [4]
    assert store.counts()["output"] == 1


async def test_a_failed_commit_keeps_everything_for_the_next(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    store.add_telemetry("a-1", "metrics", "{}")
    store.put_mark("a-1", Delivery("s", 1))
    # Another writer holds the database: the commit fails (like a full disk would).
    blocker = sqlite3.connect(tmp_path / "state.sqlite3", timeout=0)
    blocker.execute("BEGIN EXCLUSIVE")
    store._db.execute("PRAGMA busy_timeout = 0")  # fail now, not in 5 s
    with pytest.raises(StoreError, match="cannot write the state database"):
        await store.commit()
    assert store.pending == 2
    blocker.rollback()
    blocker.close()
    await store.commit()
    assert store.pending == 0
    assert len(await store.telemetry(0, 10)) == 1


def test_an_unusable_state_dir_is_a_clear_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="state directory"):
        StateStore(blocker / "state.sqlite3")


def test_a_database_from_another_version_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "state.sqlite3"
    StateStore(path).close()
    with sqlite3.connect(path) as db:
        db.execute("UPDATE meta SET value = '99' WHERE key = 'schema'")
    with pytest.raises(StoreError, match="schema 99"):
        StateStore(path)


async def test_full_sync_is_accepted_and_unknown_modes_refused(tmp_path: Path) -> None:
    store = StateStore(tmp_path / "state.sqlite3", sync="full")
    store.put_mark("a", Delivery("s", 1))
    await store.commit()
    with pytest.raises(StoreError):
        StateStore(tmp_path / "other.sqlite3", sync="sometimes")
    await trio.lowlevel.checkpoint()


@pytest.mark.parametrize("cut", [0, 1, 17, 99, 100])
async def test_the_spool_cut_is_found_without_an_index(tmp_path: Path, cut: int) -> None:
    store = StateStore(tmp_path / "state.sqlite3")
    for n in range(100):  # one row a commit, a second apart
        store.add_telemetry("a", "metrics", "{}")
        await store.commit(now_ms=NOW + n * 1000)
    await store.prune(NOW + cut * 1000, 10**9, 0)  # everything received before the cut
    rows = await store.telemetry(0, 1000)
    assert [row["receivedAt"] for row in rows] == [NOW + n * 1000 for n in range(cut, 100)]


async def test_marks_cover_exactly_the_rows_of_their_commit(tmp_path: Path) -> None:
    """A message admitted while a commit waits for the store (a prune holds it, or just
    the lock's checkpoint) is committed with its mark, or not at all: a row stored without
    its mark would be stored again when the agent re-sends it after a crash."""
    from monitoring_ws.gateway.commands import CommandBook  # noqa: PLC0415
    from monitoring_ws.gateway.config import GatewayConfig  # noqa: PLC0415
    from monitoring_ws.gateway.spool import Spool  # noqa: PLC0415

    path = tmp_path / "state.sqlite3"
    store = StateStore(path)
    spool = Spool(GatewayConfig(), store, CommandBook(store), lambda _: None)
    assert spool.admit("a", Delivery("s", 1))
    spool.keep("a", "metrics", '{"n": 1}')
    # The commit has to wait for the store, as behind a prune.
    async with trio.open_nursery() as nursery, store._writing:
        nursery.start_soon(spool.commit)
        await trio.testing.wait_all_tasks_blocked()
        assert spool.admit("a", Delivery("s", 2))  # arrives meanwhile
        spool.keep("a", "metrics", '{"n": 2}')
    store.close()
    reopened = StateStore(path)
    rows = reopened.counts()["telemetry"]
    assert reopened.load_marks()["a"].seq == rows == 2  # both rows, and the mark of both
    reopened.close()
