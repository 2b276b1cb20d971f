"""A command's output as NDJSON lines, followed as it comes (docs/api.md, "Command
output"): ``GET /api/commands/:id/output`` and ``GET /api/jobs/:id/output``.

Lines (one JSON object each): ``output`` (a chunk: ``seq``, ``stream``, ``offset``,
``text`` or ``base64``), ``dropped`` (chunks ``fromSeq``..``toSeq`` are no longer kept),
``keepalive`` (a follower waited ``KEEPALIVE_S`` for nothing), and last ``end`` with the
command's record once it has ended. A transport that streams output (``KeepsOutput``)
gives the chunks as they come; for any other record the output is the result's
``stdout`` and ``stderr``, once it has ended.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from typing import Any

import trio
from quart import Quart, Response, request

from ...protocol.payloads import NAME
from ...transports import KeepsOutput, OutputWatch
from ...web import ID_RULE, error, reach, reaches
from ..jobs import JobRunner
from ..jobs.store import Job
from .agents import COMMANDS_PATH
from .jobs import JOBS_PATH, find_job

__all__ = ["OUTPUT_LINE", "OUTPUT_TYPE", "OutputReader", "add_output_routes"]

OUTPUT_TYPE = "application/x-ndjson"
#: One line of ``GET /api/commands/:id/output`` (/openapi.json; docs/api.md has each kind).
OUTPUT_LINE: dict[str, Any] = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": {"type": "string", "enum": ["output", "dropped", "keepalive", "end"]},
        "seq": {"type": "integer", "minimum": 1},
        "stream": {"type": "string", "enum": ["stdout", "stderr"]},
        "offset": {"type": "integer", "minimum": 0},
        "text": {"type": "string"},
        "base64": {"type": "string"},
        "fromSeq": {"type": "integer", "minimum": 1},
        "toSeq": {"type": "integer", "minimum": 1},
        "record": {"oneOf": [{"$ref": "#/components/schemas/CommandRecord"}, {"type": "null"}]},
    },
}
#: Chunks read at a time.
PAGE = 500
#: A follower that had nothing to send this long sends a ``keepalive`` line (proxies
#: close idle responses).
KEEPALIVE_S = 15.0
#: How often a job's follower looks for agents that started (their output is waited on).
JOB_LOOK_S = 0.25

RecordOf = Callable[[str], Awaitable[dict[str, Any] | None]]


class OutputReader:
    """One command's lines, from where its reader left off (``cursor``: the last ``seq``
    read)."""

    def __init__(
        self, command_id: str, record_of: RecordOf, sources: Sequence[KeepsOutput], after: int
    ) -> None:
        self.command_id = command_id
        self.cursor = after
        self.ended = False
        self._record_of = record_of
        self._sources = sources
        #: The transport that keeps the record and its output, once known: asked
        #: directly after that (the host's log, a database read, never holds its records).
        self._source: KeepsOutput | None = None

    async def _record(self) -> dict[str, Any] | None:
        if self._source is not None:
            return await self._source.command_record(self.command_id)
        record = await self._record_of(self.command_id)
        if record is not None:
            transport = record.get("transport")
            self._source = next((s for s in self._sources if s.name == transport), None)
        return record

    async def step(self, *, gone_ends: bool = True) -> tuple[list[dict[str, Any]], bool]:
        """The next page of lines, and whether more can be read at once. ``gone_ends``: a
        command without a record has ended (pruned while followed); else it is not yet
        recorded (a job's command about to be sent)."""
        record = await self._record()
        if record is None:
            self.ended = gone_ends
            return ([{"type": "end", "record": None}] if gone_ends else []), False
        ended = record.get("finishedAt") is not None
        rows = await self._chunks(record, ended)
        lines: list[dict[str, Any]] = []
        for row in rows:
            if row["seq"] > self.cursor + 1:
                lines.append(
                    {"type": "dropped", "fromSeq": self.cursor + 1, "toSeq": row["seq"] - 1}
                )
            lines.append(row)
            self.cursor = row["seq"]
        if len(rows) >= PAGE:
            return lines, True
        if ended:  # read after the record said so: every chunk before its result is in
            self.ended = True
            lines.append({"type": "end", "record": record})
        return lines, False

    async def _chunks(self, record: dict[str, Any], ended: bool) -> list[dict[str, Any]]:
        if self._source is not None:
            rows = await self._source.command_output(self.command_id, self.cursor, PAGE)
            if rows is not None:
                return rows
        return _from_result(record, self.cursor) if ended else []


class _News:
    """What every source says of some commands from now on: open it before reading, wait
    on it after, so that news that came while the reader worked is not missed."""

    def __init__(self, sources: Sequence[KeepsOutput], command_ids: list[str]) -> None:
        self._watches = [s.watch_output(command_ids) for s in sources] if command_ids else []

    async def wait(self, timeout_s: float) -> None:
        """Until one source has news (at once if it came meanwhile), or ``timeout_s``."""
        if not self._watches:
            await trio.sleep(timeout_s)
            return
        async with trio.open_nursery() as nursery:

            async def one(watch: OutputWatch) -> None:
                await watch.wait(timeout_s)
                nursery.cancel_scope.cancel()

            for watch in self._watches:
                nursery.start_soon(one, watch)

    def close(self) -> None:
        for watch in self._watches:
            watch.close()


class _Quiet:
    """How long a follower has sent nothing: a ``keepalive`` line is due every
    ``KEEPALIVE_S`` of it."""

    def __init__(self) -> None:
        self.seconds = 0.0

    async def wait(self, news: _News, timeout_s: float, *, sent: bool) -> None:
        """Wait on ``news``; ``sent``: lines went out just before (the count restarts)."""
        if sent:
            self.seconds = 0.0
        started = trio.current_time()
        await news.wait(timeout_s)
        self.seconds += trio.current_time() - started

    def due(self) -> bool:
        if self.seconds < KEEPALIVE_S:
            return False
        self.seconds = 0.0
        return True


def _from_result(record: dict[str, Any], after: int) -> list[dict[str, Any]]:
    """A record whose output came with its result (not streamed): that output as chunks."""
    result = (record.get("result") or {}).get("result")
    if not isinstance(result, dict) or result.get("streamed"):
        return []
    rows, seq = [], 0
    for stream in ("stdout", "stderr"):
        text = result.get(stream)
        if isinstance(text, str) and text:
            seq += 1
            if seq > after:
                rows.append(
                    {"type": "output", "seq": seq, "stream": stream, "offset": 0, "text": text}
                )
    return rows


def _line(value: dict[str, Any]) -> bytes:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False).encode() + b"\n"


def _ndjson(lines: AsyncIterator[bytes]) -> Response:
    response = Response(lines, mimetype=OUTPUT_TYPE)
    response.headers["Cache-Control"] = "no-cache"
    response.headers["X-Accel-Buffering"] = "no"  # nginx: pass lines through at once
    response.timeout = None
    return response


def _follow() -> bool | None:
    value = request.args.get("follow", "false")
    return {"true": True, "1": True, "false": False, "0": False}.get(value)


def add_output_routes(
    app: Quart,
    sources: Sequence[KeepsOutput],
    record_of: RecordOf,
    runner: JobRunner | None,
) -> None:
    """``record_of``: a record wherever it is kept; ``runner``: the jobs (None: no job
    routes)."""

    @app.get(f"{COMMANDS_PATH}/<command_id>/output")
    async def command_output(command_id: str) -> Response:
        """``?after=SEQ`` resumes after the last line read; ``?follow=true`` waits for more
        until the command ends."""
        if not NAME.fullmatch(command_id):
            return error(400, "invalid_command_id", f"commandId: {ID_RULE}")
        after, follow = request.args.get("after", "0"), _follow()
        if not after.isdigit() or len(after) > 16 or follow is None:
            return error(
                400,
                "bad_request",
                "after: a chunk's seq (0: from the start); follow: true or false",
            )
        found = await record_of(command_id)
        if found is None or not reaches(found["agentId"]):
            return error(404, "unknown_command", f"no record of command {command_id}")
        reader = OutputReader(command_id, record_of, sources, int(after))

        async def lines() -> AsyncIterator[bytes]:
            quiet = _Quiet()
            while True:
                news = _News(sources, [command_id] if follow else [])
                try:
                    page, more = await reader.step()
                    for line in page:
                        yield _line(line)
                    if reader.ended or not (follow or more):
                        return
                    if more:
                        continue
                    await quiet.wait(news, KEEPALIVE_S - quiet.seconds, sent=bool(page))
                finally:
                    news.close()
                if quiet.due():
                    yield _line({"type": "keepalive"})

        return _ndjson(lines())

    if runner is not None:
        _add_job_output_route(app, sources, record_of, runner)


def _add_job_output_route(
    app: Quart, sources: Sequence[KeepsOutput], record_of: RecordOf, runner: JobRunner
) -> None:
    @app.get(f"{JOBS_PATH}/<job_id>/output")
    async def job_output(job_id: str) -> Response:
        """Every agent's output, each line with its ``agentId`` and ``commandId``; last an
        ``end`` line with the job's summary. ``?follow=true`` until the job ends."""
        follow = _follow()
        if follow is None:
            return error(400, "bad_request", "follow: true or false")
        found = await find_job(runner, job_id)
        if isinstance(found, Response):
            return found
        allowed = reach()
        lines = _job_lines(
            found, runner, allowed=allowed, record_of=record_of, sources=sources, follow=follow
        )
        return _ndjson(lines)


async def _job_lines(
    job: Job,
    runner: JobRunner,
    *,
    allowed: Callable[[str], bool],
    record_of: RecordOf,
    sources: Sequence[KeepsOutput],
    follow: bool,
) -> AsyncIterator[bytes]:
    readers: dict[str, OutputReader] = {}
    quiet = _Quiet()
    while True:
        ended = job.state.ended  # read before the targets: what settled before is read
        waiting = [c for c, r in readers.items() if not r.ended] if follow else []
        news = _News(sources, waiting)
        try:
            sent = False
            for target in job.targets:
                command_id = target.command_id
                if command_id is None or not allowed(target.agent_id):
                    continue
                reader = readers.get(command_id)
                if reader is None:
                    reader = OutputReader(command_id, record_of, sources, 0)
                    readers[command_id] = reader
                more = not reader.ended
                while more:
                    page, more = await reader.step(gone_ends=ended)
                    tag = {"agentId": target.agent_id, "commandId": command_id}
                    for line in page:
                        sent = True
                        yield _line({**tag, **line})
            if ended and all(r.ended for r in readers.values()):
                yield _line({"type": "end", "job": job.summary()})
                return
            if not follow:
                return
            await quiet.wait(news, JOB_LOOK_S, sent=sent)
        finally:
            news.close()
        if quiet.due():
            yield _line({"type": "keepalive"})
        job = runner.running(job.job_id) or await runner.find(job.job_id) or job
