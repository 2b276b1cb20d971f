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

import attrs
import trio

from ...clock import wall_ms
from ...transports import (
    IN_PROCESS,
    AgentNotConnectedError,
    CommandOrder,
    CommandOutcome,
    Requester,
    Transport,
    TransportError,
    UnknownCommandError,
)
from ..command_service import CommandService
from ..events import EventHub
from ..fleet import Fleet
from .spec import JobSpec, JobState, TargetState
from .store import Job, JobStore, Target

__all__ = ["JobError", "JobRunner"]

log = logging.getLogger("monitoring_ws.jobs")
#: How often results are written (and progress published) while a job runs.
FLUSH_S = 0.2
#: Jobs that ended lately stay in memory (for their pages) up to this many agents in all.
RECENT_TARGETS = 50_000
#: How often agents a job waits for are looked for.
WAIT_POLL_S = 1.0
#: With ``offline: skip``, how long an agent that was connected when the job began may
#: take to come back (a reconnect, this server's restart) before it is skipped.
RECONNECT_GRACE_S = 30.0


class JobError(Exception):
    """A job that cannot be made or changed: an HTTP status and error code with it."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(message)
        self.status, self.code = status, code


@attrs.define(eq=False)
class _Running:
    job: Job
    #: Cancelled by ``DELETE``: no new sends.
    sending: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    cancelled: bool = False
    #: Targets changed since the last write.
    dirty: dict[int, Target] = attrs.field(factory=dict)
    done: trio.Event = attrs.field(factory=trio.Event)
    #: Targets that failed (``maxErrors`` counts them).
    errors: int = 0
    #: Commands in flight, and targets waited for (an agent offline) with their deadlines.
    in_flight: int = 0
    waiting: dict[int, tuple[Target, int]] = attrs.field(factory=dict)
    #: Targets whose command may have gone out already (marked sent by an earlier run,
    #: or sent and then back to waiting).
    sent_before: set[int] = attrs.field(factory=set)
    #: Who each command's record names: the job's caller, labelled ``job:{jobId}``.
    requester: Requester = IN_PROCESS
    #: Set when a command ends or a target goes back to waiting: the sender looks again.
    changed: trio.Event = attrs.field(factory=trio.Event)
    #: One write at a time, in the order they were taken.
    writing: trio.Lock = attrs.field(factory=trio.Lock)


class JobRunner:
    """Every job of this server: the running ones in memory, all of them on disk."""

    def __init__(
        self,
        service: CommandService,
        fleet: Fleet,
        store: JobStore,
        *,
        events: EventHub | None = None,
        max_targets: int = 100_000,
        max_running: int = 16,
    ) -> None:
        self.service, self.fleet, self.store = service, fleet, store
        self._events = events
        self.max_targets, self.max_running = max_targets, max_running
        self._running: dict[str, _Running] = {}
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
                await trio.sleep_forever()
            finally:
                self._nursery = None

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
        label = f"job:{job.job_id}"
        entry = _Running(
            job, errors=job.errors(), requester=attrs.evolve(job.requester, label=label)
        )
        entry.sent_before.update(
            t.index
            for t in job.targets
            if t.state in {TargetState.SENT, TargetState.WAITING} and t.started_ms is not None
        )
        self._running[job.job_id] = entry
        self._nursery.start_soon(self._drive, entry)

    async def _drive(self, entry: _Running) -> None:
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
                self._skip_rest(entry)  # once nothing runs: nothing comes back to wait
                nursery.cancel_scope.cancel()
            job.state = self._final_state(entry)
            job.ended_ms = wall_ms()
        finally:
            with trio.CancelScope(shield=True), trio.move_on_after(5):
                await self._flush(entry)
            self._running.pop(job.job_id, None)
            if job.state.ended:
                self._ended_now(job)
            entry.done.set()
            if job.state.ended:
                log.info("job %s %s: %s", job.job_id, job.state.value, job.counts())
                self._publish(job)

    def _resume_sent(self, entry: _Running, nursery: trio.Nursery, slots: trio.Semaphore) -> None:
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
                self._ended(entry, target, TargetState.FAILED, "interrupted", message)

    async def _send_all(
        self, entry: _Running, nursery: trio.Nursery, slots: trio.Semaphore
    ) -> None:
        job, spec = entry.job, entry.job.spec
        allowed_errors = spec.max_errors.of(len(job.targets))
        queue = deque(t for t in job.targets if t.state is TargetState.PENDING)
        # Waited-for targets with their deadlines: ``offline: wait`` waits offlineWaitMs
        # from the job's start; ``skip`` waits RECONNECT_GRACE_S for an agent that was
        # connected when the job began (a reconnect, or this server's restart).
        for target in job.targets:
            if target.state is TargetState.WAITING:
                entry.waiting[target.index] = (target, self._deadline(job, wall_ms()))
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
                    self._offline(entry, target)
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
                    for target in batch:
                        nursery.start_soon(self._one, entry, target, slots)

    async def _back(self, entry: _Running) -> list[Target]:
        """The waited-for agents that are reachable now; past its deadline a target ends:
        skipped, or failed if its command may have reached the agent before it left."""
        back = []
        now = wall_ms()
        for index, (target, deadline_ms) in list(entry.waiting.items()):
            if await self._transport_for(entry.job.spec, target.agent_id) is not None:
                del entry.waiting[index]
                target.state = TargetState.PENDING
                back.append(target)
            elif now >= deadline_ms:
                del entry.waiting[index]
                if target.started_ms is None:
                    message = "not connected within the time the job waits for it"
                    self._ended(entry, target, TargetState.SKIPPED, "offline", message)
                else:
                    message = "the agent left after its command was sent and did not return"
                    self._ended(entry, target, TargetState.FAILED, "agent_gone", message)
        return back

    def _offline(self, entry: _Running, target: Target) -> None:
        """The agent cannot be reached now: wait for it (the same command id goes again)."""
        target.state = TargetState.WAITING
        entry.dirty[target.index] = target
        entry.waiting[target.index] = (target, self._deadline(entry.job, wall_ms()))

    @staticmethod
    def _deadline(job: Job, now_ms: int) -> int:
        if job.spec.offline == "wait":
            return (job.started_ms or now_ms) + job.spec.offline_wait_ms
        return now_ms + int(RECONNECT_GRACE_S * 1000)

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

    async def _one(self, entry: _Running, target: Target, slots: trio.Semaphore) -> None:
        spec = entry.job.spec
        order = CommandOrder(
            target.agent_id,
            spec.command,
            spec.args,
            spec.timeout_ms,
            entry.requester,
            command_id=target.command_id,
            # Sent before (this server restarted, or the agent left): ask, do not resend.
            again=target.index in entry.sent_before,
        )
        try:
            routed = await self.service.run(order, via=target.transport)
        except AgentNotConnectedError:  # gone before it went (or a restart lost the record)
            entry.sent_before.add(target.index)
            self._offline(entry, target)
        except TransportError as exc:
            cancelled = exc.code == "command_cancelled"
            state = TargetState.CANCELLED if cancelled else TargetState.FAILED
            self._ended(entry, target, state, exc.code, str(exc))
        else:
            outcome = routed.outcome
            assert isinstance(outcome, CommandOutcome)  # noqa: S101 - run raises the others
            target.command_id = outcome.command_id or target.command_id
            if outcome.ok:
                self._ended(entry, target, TargetState.SUCCEEDED)
            else:
                code = outcome.error_code or "failed"
                self._ended(entry, target, TargetState.FAILED, code, outcome.error_message)
        finally:
            entry.in_flight -= 1
            entry.changed.set()
            slots.release()

    def _ended(
        self,
        entry: _Running,
        target: Target,
        state: TargetState,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        target.end(state, reason, message)
        entry.dirty[target.index] = target
        job = entry.job
        entry.errors += state is TargetState.FAILED
        if state is TargetState.FAILED and job.first_error is None:
            job.first_error = {"agentId": target.agent_id, "code": reason, "message": message}

    def _skip_rest(self, entry: _Running) -> None:
        """After the sender stopped: what was never sent says why."""
        job = entry.job
        if entry.cancelled:
            state, reason, message = TargetState.CANCELLED, "cancelled", "the job was cancelled"
            job.stop_reason = "cancelled"
        else:
            allowed = job.spec.max_errors.to_json()
            state, reason = TargetState.SKIPPED, "stopped"
            message = f"the job stopped sending: more errors than maxErrors ({allowed})"
        for target in job.targets:
            if target.state in {TargetState.PENDING, TargetState.WAITING}:
                self._ended(entry, target, state, reason, message)

    def _final_state(self, entry: _Running) -> JobState:
        job = entry.job
        if entry.cancelled:
            return JobState.CANCELLED
        if job.stop_reason == "max_errors":
            return JobState.STOPPED
        return JobState.FAILED if job.errors() else JobState.SUCCEEDED

    def _take_dirty(self, entry: _Running) -> list[Target]:
        dirty = list(entry.dirty.values())
        entry.dirty.clear()
        return dirty

    async def _save(self, entry: _Running, targets: list[Target]) -> None:
        async with entry.writing:
            await self.store.save(entry.job, [*targets, *self._take_dirty(entry)])

    async def _flush(self, entry: _Running) -> None:
        await self._save(entry, [])

    async def _flush_often(self, entry: _Running) -> None:
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
