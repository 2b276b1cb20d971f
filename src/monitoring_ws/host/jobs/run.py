"""``JobRun``: one job while this server runs it — which of its agents wait, run, ended,
and what each command's answer makes of its agent. Bookkeeping only: the runner
(runner.py) does the sending and the writing."""

from __future__ import annotations

import attrs
import trio

from ...clock import wall_ms
from ...transports import (
    IN_PROCESS,
    AgentNotConnectedError,
    CommandOrder,
    CommandOutcome,
    Requester,
    TransportError,
)
from ..router import Routed
from .spec import JobState, TargetState
from .store import Job, Target

__all__ = ["RECONNECT_GRACE_S", "JobRun"]

#: With ``offline: skip``, how long an agent that was connected when the job began may
#: take to come back (a reconnect, this server's restart) before it is skipped.
RECONNECT_GRACE_S = 30.0


@attrs.define(eq=False)
class JobRun:
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
    #: The whole run: cancelled when another server took the job over (``lost``).
    scope: trio.CancelScope = attrs.field(factory=trio.CancelScope)
    lost: bool = False

    @classmethod
    def of(cls, job: Job) -> JobRun:
        """A job as it was stored: what it may have sent already is asked for, not resent."""
        run = cls(job, errors=job.errors())
        run.requester = attrs.evolve(job.requester, label=f"job:{job.job_id}")
        run.sent_before.update(
            t.index
            for t in job.targets
            if t.state in {TargetState.SENT, TargetState.WAITING} and t.started_ms is not None
        )
        for target in job.targets:
            if target.state is TargetState.WAITING:
                run.waiting[target.index] = (target, run.deadline(wall_ms()))
        return run

    def order(self, target: Target) -> CommandOrder:
        spec = self.job.spec
        return CommandOrder(
            target.agent_id,
            spec.command,
            spec.args,
            spec.timeout_ms,
            self.requester,
            command_id=target.command_id,
            # Sent before (this server restarted, or the agent left): ask, do not resend.
            again=target.index in self.sent_before,
            stream_output=spec.stream_output,
            intent=spec.intent,
        )

    def settle(self, target: Target, answer: Routed | TransportError) -> None:
        """What came of one target's command."""
        if isinstance(answer, AgentNotConnectedError):  # gone before it went
            self.sent_before.add(target.index)  # (or a restart lost the record)
            self.offline(target)
        elif isinstance(answer, TransportError):
            cancelled = answer.code == "command_cancelled"
            state = TargetState.CANCELLED if cancelled else TargetState.FAILED
            self.ended(target, state, answer.code, str(answer))
        else:
            outcome = answer.outcome
            assert isinstance(outcome, CommandOutcome)  # noqa: S101 - run raises the others
            target.command_id = outcome.command_id or target.command_id
            if outcome.ok:
                self.ended(target, TargetState.SUCCEEDED)
            else:
                code = outcome.error_code or "failed"
                self.ended(target, TargetState.FAILED, code, outcome.error_message)

    def ended(
        self,
        target: Target,
        state: TargetState,
        reason: str | None = None,
        message: str | None = None,
    ) -> None:
        target.end(state, reason, message)
        self.dirty[target.index] = target
        self.errors += state is TargetState.FAILED
        if state is TargetState.FAILED and self.job.first_error is None:
            error = {"agentId": target.agent_id, "code": reason, "message": message}
            self.job.first_error = error

    def offline(self, target: Target) -> None:
        """The agent cannot be reached now: wait for it (the same command id goes again)."""
        target.state = TargetState.WAITING
        self.dirty[target.index] = target
        self.waiting[target.index] = (target, self.deadline(wall_ms()))

    def deadline(self, now_ms: int) -> int:
        """Until when a target that is offline now is waited for: ``offline: wait``,
        offlineWaitMs from the job's start; ``skip``, RECONNECT_GRACE_S."""
        spec = self.job.spec
        if spec.offline == "wait":
            return (self.job.started_ms or now_ms) + spec.offline_wait_ms
        return now_ms + int(RECONNECT_GRACE_S * 1000)

    def gave_up(self, target: Target) -> None:
        """Its deadline passed: skipped, or failed if its command may have reached the
        agent before it left."""
        del self.waiting[target.index]
        if target.started_ms is None:
            message = "not connected within the time the job waits for it"
            self.ended(target, TargetState.SKIPPED, "offline", message)
        else:
            message = "the agent left after its command was sent and did not return"
            self.ended(target, TargetState.FAILED, "agent_gone", message)

    def skip_rest(self) -> None:
        """After the sender stopped: what was never sent says why."""
        job = self.job
        if self.cancelled:
            state, reason, message = TargetState.CANCELLED, "cancelled", "the job was cancelled"
            job.stop_reason = "cancelled"
        else:
            allowed = job.spec.max_errors.to_json()
            state, reason = TargetState.SKIPPED, "stopped"
            message = f"the job stopped sending: more errors than maxErrors ({allowed})"
        for target in job.targets:
            if target.state in {TargetState.PENDING, TargetState.WAITING}:
                self.ended(target, state, reason, message)

    def final_state(self) -> JobState:
        if self.cancelled:
            return JobState.CANCELLED
        if self.job.stop_reason == "max_errors":
            return JobState.STOPPED
        return JobState.FAILED if self.errors else JobState.SUCCEEDED

    def take_dirty(self) -> list[Target]:
        dirty = list(self.dirty.values())
        self.dirty.clear()
        return dirty
