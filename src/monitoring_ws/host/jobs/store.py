"""Jobs and their targets, durable: one SQLite file beside the other state. A target is
marked ``sent`` (with its command id and transport) in the same transaction as the
batch it goes in, before anything is sent: after a crash the job knows what it may have
sent and asks for that id again instead of sending twice."""

from __future__ import annotations

import json
import threading
from collections import Counter
from collections.abc import Collection
from pathlib import Path
from typing import Any, Protocol

import attrs
import trio

from ...clock import wall_ms
from ...private import private_sqlite
from ...transports import Requester
from .spec import JobSpec, JobState, TargetState, parse_job

__all__ = ["Job", "JobStorage", "JobStore", "Target"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    job_id TEXT PRIMARY KEY,
    created_ms INTEGER NOT NULL,
    ended INTEGER NOT NULL,
    record TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS jobs_created ON jobs (created_ms, job_id);
CREATE TABLE IF NOT EXISTS targets (
    job_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    record TEXT NOT NULL,
    PRIMARY KEY (job_id, idx)
);
"""


@attrs.define(eq=False)
class Target:
    """One agent of a job."""

    index: int
    agent_id: str
    state: TargetState = TargetState.PENDING
    #: Why it was skipped or failed (an error code), or None.
    reason: str | None = None
    message: str | None = None
    transport: str | None = None
    command_id: str | None = None
    started_ms: int | None = None
    ended_ms: int | None = None

    def end(
        self, state: TargetState, reason: str | None = None, message: str | None = None
    ) -> None:
        self.state, self.reason, self.message = state, reason, message
        self.ended_ms = wall_ms()

    def to_json(self) -> dict[str, Any]:
        return {
            "agentId": self.agent_id,
            "state": self.state.value,
            "reason": self.reason,
            "message": self.message,
            "transport": self.transport,
            "commandId": self.command_id,
            "startedAt": self.started_ms,
            "endedAt": self.ended_ms,
        }

    @classmethod
    def from_json(cls, index: int, value: dict[str, Any]) -> Target:
        return cls(
            index,
            value["agentId"],
            TargetState(value["state"]),
            value.get("reason"),
            value.get("message"),
            value.get("transport"),
            value.get("commandId"),
            value.get("startedAt"),
            value.get("endedAt"),
        )


#: A job's summary names at most this many of its selector's ids (and how many there are).
SHOWN_IDS = 100


def _shown(selector: dict[str, Any]) -> dict[str, Any]:
    """The selector as summaries show it: a long ``ids`` list cut, with its length."""
    ids = selector.get("ids")
    if ids is None or len(ids) <= SHOWN_IDS:
        return selector
    return {**selector, "ids": ids[:SHOWN_IDS], "idsCount": len(ids)}


@attrs.define(eq=False)
class Job:
    """A job and every agent it targets."""

    job_id: str
    spec: JobSpec
    requester: Requester
    created_ms: int
    targets: list[Target]
    state: JobState = JobState.PENDING
    started_ms: int | None = None
    ended_ms: int | None = None
    #: Why it stopped sending (``max_errors``, ``cancelled``), or None.
    stop_reason: str | None = None
    #: The first target that failed: agent, error code and message.
    first_error: dict[str, Any] | None = None

    def counts(self) -> dict[str, int]:
        counted = Counter(target.state.value for target in self.targets)
        return {state.value: counted.get(state.value, 0) for state in TargetState}

    def errors(self) -> int:
        return sum(1 for target in self.targets if target.state is TargetState.FAILED)

    def summary(self) -> dict[str, Any]:
        """Everything but the targets."""
        counts = self.counts()
        done = sum(n for state, n in counts.items() if TargetState(state).ended)
        return {
            "jobId": self.job_id,
            "state": self.state.value,
            **self.spec.to_json(),
            "selector": _shown(self.spec.selector.to_json()),
            "requestedBy": self.requester.to_json() | {"label": self.spec.label},
            "createdAt": self.created_ms,
            "startedAt": self.started_ms,
            "endedAt": self.ended_ms,
            "matched": len(self.targets),
            "counts": counts,
            "progress": {"done": done, "total": len(self.targets)},
            "stopReason": self.stop_reason,
            "firstError": self.first_error,
        }

    def row(self) -> dict[str, Any]:
        """The job without its targets, as stored."""
        return {
            "jobId": self.job_id,
            "spec": self.spec.to_json(),
            "requester": self.requester.to_json(),
            "createdAt": self.created_ms,
            "state": self.state.value,
            "startedAt": self.started_ms,
            "endedAt": self.ended_ms,
            "stopReason": self.stop_reason,
            "firstError": self.first_error,
            "summary": self.summary(),
        }

    @classmethod
    def from_row(cls, row: dict[str, Any], targets: list[Target]) -> Job:
        # Limits checked when the job was made; a stored spec is read back as it was.
        spec = parse_job(row["spec"], default_timeout_ms=1, max_timeout_ms=2**53)
        return cls(
            row["jobId"],
            spec,
            Requester.from_json(row["requester"]),
            row["createdAt"],
            targets,
            JobState(row["state"]),
            row.get("startedAt"),
            row.get("endedAt"),
            row.get("stopReason"),
            row.get("firstError"),
        )


class JobStorage(Protocol):
    """Where jobs are kept: this node's SQLite file (``JobStore``), or in a cluster a store
    every node reads (a plugin's ``Plugin.job_store()``), where a node claims the jobs it
    runs and another carries on those whose node died."""

    async def create(self, job: Job) -> None: ...

    async def save(self, job: Job, targets: list[Target]) -> None: ...

    async def unfinished(self) -> list[Job]:
        """At start: the jobs this server is to carry on (now its own)."""
        ...

    async def get(self, job_id: str) -> Job | None: ...

    async def summaries(self, limit: int, before: tuple[int, str] | None) -> list[dict[str, Any]]:
        """Jobs newest first, as their summaries were last saved."""
        ...

    async def keep(self, job_ids: Collection[str]) -> set[str]:
        """Renew this server's claim on the jobs it runs; the ids it no longer holds."""
        ...

    async def orphans(self) -> list[Job]:
        """Jobs whose server stopped renewing its claim, now claimed by this one."""
        ...

    def close(self) -> None: ...


class JobStore:
    """Jobs on disk (``path`` None: in memory), bounded by age and count of ended jobs:
    one server's, which carries them on when it starts again."""

    def __init__(
        self, path: Path | None, *, retention_ms: int = 7 * 86_400_000, max_jobs: int = 1000
    ) -> None:
        self.retention_ms, self.max_jobs = retention_ms, max_jobs
        self._db = private_sqlite(path, _SCHEMA)
        self._db.execute("PRAGMA journal_mode=WAL")
        self._lock = threading.Lock()

    async def create(self, job: Job) -> None:
        """The job and all its targets, in one transaction."""
        rows = [(job.job_id, t.index, json.dumps(t.to_json())) for t in job.targets]
        await trio.to_thread.run_sync(self._save, job, rows, True)

    async def save(self, job: Job, targets: list[Target]) -> None:
        """The job's state and these targets', in one transaction."""
        rows = [(job.job_id, t.index, json.dumps(t.to_json())) for t in targets]
        await trio.to_thread.run_sync(self._save, job, rows, False)

    def _save(self, job: Job, rows: list[tuple[str, int, str]], new: bool) -> None:
        with self._lock:
            db = self._db
            db.execute("BEGIN")
            try:
                db.execute(
                    "INSERT OR REPLACE INTO jobs VALUES (?, ?, ?, ?)",
                    (job.job_id, job.created_ms, int(job.state.ended), json.dumps(job.row())),
                )
                db.executemany("INSERT OR REPLACE INTO targets VALUES (?, ?, ?)", rows)
                if new:
                    self._prune()
            except BaseException:
                db.execute("ROLLBACK")
                raise
            db.execute("COMMIT")

    def _prune(self) -> None:
        old = wall_ms() - self.retention_ms
        gone = [
            row[0]
            for row in self._db.execute(
                "SELECT job_id FROM jobs WHERE ended = 1 AND (created_ms < ? OR job_id NOT IN "
                "(SELECT job_id FROM jobs ORDER BY created_ms DESC LIMIT ?))",
                (old, self.max_jobs),
            )
        ]
        for job_id in gone:
            self._db.execute("DELETE FROM targets WHERE job_id = ?", (job_id,))
            self._db.execute("DELETE FROM jobs WHERE job_id = ?", (job_id,))

    async def unfinished(self) -> list[Job]:
        """Jobs a restart must carry on, with their targets."""
        return await trio.to_thread.run_sync(self._jobs, "WHERE ended = 0", ())

    async def keep(self, job_ids: Collection[str]) -> set[str]:
        return set()  # one server's file: nobody else takes its jobs

    async def orphans(self) -> list[Job]:
        return []

    async def get(self, job_id: str) -> Job | None:
        found = await trio.to_thread.run_sync(self._jobs, "WHERE job_id = ?", (job_id,))
        return found[0] if found else None

    def _jobs(self, where: str, params: tuple[Any, ...]) -> list[Job]:
        with self._lock:
            rows = self._db.execute(f"SELECT record FROM jobs {where}", params).fetchall()  # noqa: S608
            jobs = []
            for (text,) in rows:
                row = json.loads(text)
                targets = [
                    Target.from_json(index, json.loads(record))
                    for index, record in self._db.execute(
                        "SELECT idx, record FROM targets WHERE job_id = ? ORDER BY idx",
                        (row["jobId"],),
                    )
                ]
                jobs.append(Job.from_row(row, targets))
            return jobs

    async def summaries(self, limit: int, before: tuple[int, str] | None) -> list[dict[str, Any]]:
        """Jobs newest first, as their summaries were last saved."""

        def read() -> list[dict[str, Any]]:
            where, params = "", tuple[Any, ...]((limit,))
            if before is not None:
                where = "WHERE (created_ms, job_id) < (?, ?)"
                params = (*before, limit)
            sql = f"SELECT record FROM jobs {where} ORDER BY created_ms DESC, job_id DESC LIMIT ?"  # noqa: S608
            with self._lock:
                rows = self._db.execute(sql, params).fetchall()
            return [json.loads(text)["summary"] for (text,) in rows]

        return await trio.to_thread.run_sync(read)

    def close(self) -> None:
        with self._lock:
            self._db.close()
