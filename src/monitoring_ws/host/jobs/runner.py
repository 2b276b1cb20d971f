"""Runs jobs: the selector resolved once, then each agent's command through the
``CommandService`` at most ``maxConcurrency`` at a time, until done, stopped by errors or
cancelled; carried on after a restart without sending any agent its command twice.

Each job is one task with its own nursery: a sender that marks a batch of targets
``sent`` on disk and then sends them, one task per command in flight, and a flusher that
writes results every ``FLUSH_S``.
"""

from __future__ import annotations

import logging
import secrets
from collections import OrderedDict, deque
from collections.abc import Callable
from typing import Any

import trio

from ...clock import wall_ms
from ...transports import (
    Requester,
    SendsBatches,
    Transport,
    TransportError,
    UnknownCommandError,
)
from ..command_service import CommandService
from ..events import EventHub
from ..fleet import Fleet
from ..router import Routed
from .run import JobRun
from .spec import JobSpec, JobState, TargetState, intent_agents
from .store import Job, JobStorage, Target

__all__ = ["JobError", "JobRunner"]

log = logging.getLogger("monitoring_ws.jobs")
#: How often results are written (and progress published) while a job runs.
FLUSH_S = 0.2
#: Jobs that ended lately stay in memory (for their pages) up to this many agents in all.
RECENT_TARGETS = 50_000
#: With at least GATHER_FROM commands at once, slots freed within GATHER_S are sent as
#: one batch.
GATHER_FROM, GATHER_S = 16, 0.005
#: How often a server renews its claim on the jobs it runs and looks for jobs left by a
#: server that stopped (a cluster's store; the claim lapses after three missed renewals).
CLAIM_EVERY_S = 3.0
#: How often agents a job waits for are looked for.
WAIT_POLL_S = 1.0


class JobError(Exception):
    """A job that cannot be made or changed: an HTTP status and error code with it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


class JobRunner:
    """Every job of this server: the running ones in memory, all of them on disk."""

    def __init__(
        self,
        service: CommandService,
        fleet: Fleet,
        store: JobStorage,
        *,
        events: EventHub | None = None,
        max_targets: int = 100_000,
        max_running: int = 16,
    ) -> None:
        self.service, self.fleet, self.store = service, fleet, store
        self._events = events
        self.max_targets, self.max_running = max_targets, max_running
        self._running: dict[str, JobRun] = {}
        #: The transports that send batches, by name (looked up once: an ``isinstance``
        #: of a runtime protocol per agent is slow).
        self._batching = {
            t.name: t for t in service.router.transports if isinstance(t, SendsBatches)
        }
        self._recent: OrderedDict[str, Job] = OrderedDict()
        self._recent_targets = 0
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Carry on the jobs a previous run left, then run new ones until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            for job in await self.store.unfinished():
                log.info("job %s: carried on after a restart", job.job_id)
                self._start(job)
            task_status.started()
            try:
                await self._watch()
            finally:
                self._nursery = None

    async def _watch(self) -> None:
        """Renew the claim on the jobs this server runs, drop those another took over,
        and carry on the jobs of servers that stopped renewing theirs (in a cluster)."""
        while True:
            await trio.sleep(CLAIM_EVERY_S)
            for job_id in await self.store.keep(list(self._running)):
                entry = self._running.get(job_id)
                if entry is not None:
                    log.warning("job %s: another server carries it on now", job_id)
                    entry.lost = True
                    entry.scope.cancel()
            for job in await self.store.orphans():
                if job.job_id not in self._running:
                    log.info("job %s: carried on here (its server stopped)", job.job_id)
                    self._start(job)

    def running(self, job_id: str) -> Job | None:
        entry = self._running.get(job_id)
        return None if entry is None else entry.job

    async def find(self, job_id: str) -> Job | None:
        """A job as it is now: running, ended lately (in memory), or from the disk."""
        return self.running(job_id) or self._recent.get(job_id) or await self.store.get(job_id)

    def _ended_now(self, job: Job) -> None:
        self._recent[job.job_id] = job
        self._recent_targets += len(job.targets)
        while self._recent_targets > RECENT_TARGETS and len(self._recent) > 1:
            _, gone = self._recent.popitem(last=False)
            self._recent_targets -= len(gone.targets)

    async def create(
        self, spec: JobSpec, requester: Requester, reaches: Callable[[str], bool]
    ) -> Job:
        """Resolve the selector, write the job, start it. Raises ``JobError``."""
        if self._nursery is None:
            raise JobError(503, "shutting_down", "the server is shutting down")
        if len(self._running) >= self.max_running:
            raise JobError(
                429, "too_many_jobs", f"{self.max_running} jobs run already: wait for one to end"
            )
        matched = await self.fleet.select(spec.selector, full=False)
        signed_for = intent_agents(spec)
        if signed_for is not None:  # the operator signed for these: no other agent
            matched = [entry for entry in matched if entry["agentId"] in signed_for]
        if not matched:
            raise JobError(404, "no_agents", "the selector matches no agent: nothing to run")
        if len(matched) > self.max_targets:
            raise JobError(
                413,
                "too_many_agents",
                f"the selector matches {len(matched)} agents, a job takes at most "
                f"{self.max_targets} ([server] max_job_agents): narrow it",
            )
        targets = [Target(index, entry["agentId"]) for index, entry in enumerate(matched)]
        only = spec.selector.transport
        for target in targets:
            entry = matched[target.index]
            connected = entry["connected"] if only is None else entry["transports"].get(only)
            if not reaches(target.agent_id):  # said, not silently dropped
                target.end(TargetState.SKIPPED, "not_permitted", "the token may not command it")
            elif spec.offline == "skip" and not connected:
                target.end(TargetState.SKIPPED, "offline", "not connected when the job began")
        job = Job(f"j{secrets.token_hex(8)}", spec, requester, wall_ms(), targets)
        await self.store.create(job)
        self._publish(job)
        self._start(job)
        return job

    async def cancel(self, job_id: str) -> Job | None:
        """Stop sending and cancel what runs where the transport can; the job as it is
        after, None when this server does not run it."""
        entry = self._running.get(job_id)
        if entry is None:
            return None
        entry.cancelled = True
        entry.sending.cancel()
        for target in entry.job.targets:
            if target.state is TargetState.SENT and target.command_id is not None:
                await self._cancel_command(target)
        with trio.move_on_after(5):
            await entry.done.wait()
        return entry.job

    async def _cancel_command(self, target: Target) -> None:
        for transport in self.service.keepers:
            if transport.name != target.transport:
                continue
            try:
                await transport.cancel_command(str(target.command_id))
            except (UnknownCommandError, TransportError) as exc:
                log.info("cannot cancel %s: %s", target.command_id, exc)

    def _start(self, job: Job) -> None:
        assert self._nursery is not None  # noqa: S101 - run() is running
        entry = JobRun.of(job)
        self._running[job.job_id] = entry
        self._nursery.start_soon(self._drive, entry)

    async def _drive(self, entry: JobRun) -> None:
        with entry.scope:
            await self._drive_within(entry)

    async def _drive_within(self, entry: JobRun) -> None:
        job = entry.job
        try:
            if job.state is JobState.PENDING:
                job.state, job.started_ms = JobState.RUNNING, wall_ms()
                await self._save(entry, [])
                self._publish(job)
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._flush_often, entry)
                async with trio.open_nursery() as commands:
                    limit = job.spec.max_concurrency.of(len(job.targets), at_least=1)
                    slots = trio.Semaphore(limit)
                    self._resume_sent(entry, commands, slots)
                    with entry.sending:
                        await self._send_all(entry, commands, slots)
                entry.skip_rest()  # once nothing runs: nothing comes back to wait
                nursery.cancel_scope.cancel()
            job.state = entry.final_state()
            job.ended_ms = wall_ms()
        finally:
            if not entry.lost:  # a job another server took over is its to write
                with trio.CancelScope(shield=True), trio.move_on_after(5):
                    await self._flush(entry)
            self._running.pop(job.job_id, None)
            if job.state.ended:
                self._ended_now(job)
            entry.done.set()
            if job.state.ended:
                log.info("job %s %s: %s", job.job_id, job.state.value, job.counts())
                self._publish(job)

    def _resume_sent(self, entry: JobRun, nursery: trio.Nursery, slots: trio.Semaphore) -> None:
        """After a restart: a target marked sent is asked for again by its id through a
        transport that keeps records (which answers from its record, or the agent from
        its journal); through one that keeps none it may have run, so it is not sent."""
        keepers = {transport.name for transport in self.service.keepers}
        for target in entry.job.targets:
            if target.state is not TargetState.SENT:
                continue
            if target.transport in keepers:
                slots.acquire_nowait()  # no more were sent than there are slots
                entry.in_flight += 1
                nursery.start_soon(self._one, entry, target, slots)
            else:
                message = "the server restarted while it ran; not sent again"
                entry.ended(target, TargetState.FAILED, "interrupted", message)

    async def _send_all(self, entry: JobRun, nursery: trio.Nursery, slots: trio.Semaphore) -> None:
        job, spec = entry.job, entry.job.spec
        allowed_errors = spec.max_errors.of(len(job.targets))
        limit = spec.max_concurrency.of(len(job.targets), at_least=1)
        queue = deque(t for t in job.targets if t.state is TargetState.PENDING)
        while queue or entry.waiting or entry.in_flight:
            if entry.errors > allowed_errors:
                job.stop_reason = "max_errors"
                return
            if not queue:  # what is left runs, or waits for its agent: look again soon
                entry.changed = trio.Event()
                with trio.move_on_after(WAIT_POLL_S):
                    await entry.changed.wait()
                queue.extend(await self._back(entry))
                continue
            await slots.acquire()
            if limit >= GATHER_FROM and len(queue) > 1:
                # Answers come in bursts: let the burst free its slots, then send them
                # as one batch (one write) rather than one write per answer.
                await trio.sleep(GATHER_S)
            if entry.errors > allowed_errors:  # while it waited for a slot
                slots.release()
                continue
            free = 1
            while free < len(queue) and slots.value:
                slots.acquire_nowait()
                free += 1
            batch: list[Target] = []
            while queue and len(batch) < free:
                target = queue.popleft()
                transport = await self._transport_for(spec, target.agent_id)
                if transport is None:
                    entry.offline(target)
                    continue
                target.state, target.transport = TargetState.SENT, transport.name
                target.command_id = f"{job.job_id}.{target.index}"
                target.started_ms = wall_ms()
                batch.append(target)
            for _ in range(free - len(batch)):
                slots.release()
            if batch:
                # On disk before anything is sent: after a crash these are asked for
                # again by id, never sent afresh. Shielded: a cancel does not come
                # between the mark and the send.
                with trio.CancelScope(shield=True):
                    await self._save(entry, batch)
                    entry.in_flight += len(batch)
                    self._start_sends(entry, batch, nursery, slots)

    def _start_sends(
        self, entry: JobRun, batch: list[Target], nursery: trio.Nursery, slots: trio.Semaphore
    ) -> None:
        """One task per command; through a transport that sends batches, one per batch."""
        batched: dict[str, tuple[SendsBatches, list[Target]]] = {}
        for target in batch:
            transport = self._batching.get(str(target.transport))
            if transport is not None and target.index not in entry.sent_before:
                batched.setdefault(transport.name, (transport, []))[1].append(target)
            else:
                nursery.start_soon(self._one, entry, target, slots)
        for transport, targets in batched.values():
            size = transport.max_batch
            for start in range(0, len(targets), size):
                chunk = targets[start : start + size]
                nursery.start_soon(self._many, entry, chunk, transport.name, slots)

    async def _back(self, entry: JobRun) -> list[Target]:
        """The waited-for agents that are reachable now; past its deadline one ends."""
        back = []
        now = wall_ms()
        for target, deadline_ms in list(entry.waiting.values()):
            if await self._transport_for(entry.job.spec, target.agent_id) is not None:
                del entry.waiting[target.index]
                target.state = TargetState.PENDING
                back.append(target)
            elif now >= deadline_ms:
                entry.gave_up(target)
        return back

    async def _transport_for(self, spec: JobSpec, agent_id: str) -> Transport | None:
        """The first transport (or the selector's) that reaches the agent for the command."""
        router = self.service.router
        candidates = router.transports
        if spec.selector.transport is not None:
            candidates = tuple(t for t in candidates if t.name == spec.selector.transport)
        for transport in candidates:
            if await transport.can_reach(agent_id, spec.command):
                return transport
        return None

    async def _one(self, entry: JobRun, target: Target, slots: trio.Semaphore) -> None:
        try:
            try:
                answer: Routed | TransportError = await self.service.run(
                    entry.order(target), via=target.transport
                )
            except TransportError as exc:
                answer = exc
            entry.settle(target, answer)
        finally:
            self._done(entry, slots, 1)

    async def _many(
        self, entry: JobRun, targets: list[Target], via: str, slots: trio.Semaphore
    ) -> None:
        """Targets sent together through a transport that ``SendsBatches`` (SSM: one
        SendCommand for up to 50 instances), each settled on its own."""
        try:
            orders = [entry.order(target) for target in targets]
            answers = await self.service.run_batch(orders, via)
            for target, answer in zip(targets, answers, strict=True):
                entry.settle(target, answer)
        finally:
            self._done(entry, slots, len(targets))

    def _done(self, entry: JobRun, slots: trio.Semaphore, count: int) -> None:
        entry.in_flight -= count
        entry.changed.set()
        for _ in range(count):
            slots.release()

    async def _save(self, entry: JobRun, targets: list[Target]) -> None:
        async with entry.writing:
            await self.store.save(entry.job, [*targets, *entry.take_dirty()])

    async def _flush(self, entry: JobRun) -> None:
        await self._save(entry, [])

    async def _flush_often(self, entry: JobRun) -> None:
        while True:
            await trio.sleep(FLUSH_S)
            if entry.dirty:
                await self._flush(entry)
                self._publish(entry.job)

    def _publish(self, job: Job) -> None:
        if self._events is not None:
            self._events.publish("job", "", _event(job))


def _event(job: Job) -> dict[str, Any]:
    summary = job.summary()
    return {key: summary[key] for key in ("jobId", "state", "counts", "progress", "stopReason")}
