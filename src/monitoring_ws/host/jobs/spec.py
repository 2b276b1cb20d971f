"""What a job is asked to do (``POST /api/jobs``), checked; and what becomes of it and of
each agent it targets. Pure code."""

from __future__ import annotations

import enum
import json
import math
import re
from collections.abc import Mapping
from typing import Any

import attrs

from ...protocol.intent import IntentRefusedError, SignedIntent, fitting_args
from ...protocol.payloads import NAME
from ..selectors import Selector, SelectorError, parse_selector

__all__ = [
    "JOB_KEYS",
    "Amount",
    "JobSpec",
    "JobSpecError",
    "JobState",
    "TargetState",
    "parse_job",
]

JOB_KEYS = frozenset(
    {
        "selector",
        "command",
        "args",
        "timeoutMs",
        "maxConcurrency",
        "maxErrors",
        "offline",
        "offlineWaitMs",
        "requestedBy",
        "streamOutput",
        "intent",
    }
)
#: SSM's defaults: 50 agents at a time; the first error stops the job.
DEFAULT_CONCURRENCY, DEFAULT_ERRORS = "50", "0"
DEFAULT_OFFLINE_WAIT_MS, MAX_OFFLINE_WAIT_MS = 600_000, 7 * 86_400_000
#: A job's arguments are kept with every agent's record: smaller than one command's.
MAX_JOB_ARGS_BYTES = 64 << 10
_AMOUNT = re.compile(r"(0|[1-9]\d{0,8})(%?)")


class JobSpecError(ValueError):
    """A job request that cannot run; the message says what to fix."""


class IntentSpecError(JobSpecError):
    """The job's ``intent`` does not fit it or cannot be checked (409)."""


class JobState(enum.StrEnum):
    PENDING = "pending"
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    STOPPED = "stopped"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self not in {JobState.PENDING, JobState.RUNNING}


class TargetState(enum.StrEnum):
    """One agent of a job: ``pending`` (not sent yet), ``waiting`` (offline, waited for),
    ``sent`` (its command runs), then ``succeeded``, ``failed`` (an error: the agent's
    answer, a timeout, the agent gone), ``skipped`` (never sent: the reason says why) or
    ``cancelled``."""

    PENDING = "pending"
    WAITING = "waiting"
    SENT = "sent"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def ended(self) -> bool:
        return self not in {TargetState.PENDING, TargetState.WAITING, TargetState.SENT}


@attrs.frozen
class Amount:
    """A count of agents, or a percentage of the matched ones (SSM's ``MaxConcurrency``
    and ``MaxErrors``)."""

    value: int
    percent: bool = False

    def of(self, matched: int, *, at_least: int = 0) -> int:
        """How many agents it is for a job that matched ``matched``."""
        count = math.ceil(matched * self.value / 100) if self.percent else self.value
        return max(at_least, count)

    def to_json(self) -> str:
        return f"{self.value}%" if self.percent else str(self.value)

    @classmethod
    def parse(cls, value: Any, name: str, *, minimum: int) -> Amount:
        """An integer, or a string ``"10"`` or ``"10%"``; raises ``JobSpecError``."""
        value = _whole(value)
        if isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        found = _AMOUNT.fullmatch(value) if isinstance(value, str) else None
        amount = None if found is None else cls(int(found.group(1)), bool(found.group(2)))
        if amount is None or amount.value < minimum or (amount.percent and amount.value > 100):
            raise JobSpecError(
                f"{name} must be a number >= {minimum} or a percentage "
                f'("10%", {max(minimum, 1)}-100) of the matched agents'
            )
        return amount


@attrs.frozen
class JobSpec:
    """A checked job request."""

    selector: Selector
    command: str
    args: Mapping[str, Any]
    timeout_ms: int
    max_concurrency: Amount
    max_errors: Amount
    #: ``skip`` agents that are not connected, or ``wait`` for them up to ``offline_wait_ms``.
    offline: str
    offline_wait_ms: int
    #: The caller's own label for the job (``requestedBy`` in the body).
    label: str | None = None
    #: Each agent's output is sent as it happens (``GET /api/jobs/:id/output``).
    stream_output: bool = False
    #: The operator's signed intent, sent with every command of the job; it names the
    #: agents the job may reach.
    intent: Mapping[str, Any] | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "selector": self.selector.to_json(),
            "command": self.command,
            "args": dict(self.args),
            "timeoutMs": self.timeout_ms,
            "maxConcurrency": self.max_concurrency.to_json(),
            "maxErrors": self.max_errors.to_json(),
            "offline": self.offline,
            "offlineWaitMs": self.offline_wait_ms,
            "requestedBy": self.label,
            "streamOutput": self.stream_output,
            **({} if self.intent is None else {"intent": dict(self.intent)}),
        }


def parse_job(body: Any, *, default_timeout_ms: int, max_timeout_ms: int) -> JobSpec:
    """``POST /api/jobs``'s body (also a stored job's spec); raises ``JobSpecError``."""
    if not isinstance(body, Mapping):
        raise JobSpecError("the body must be a JSON object")
    unknown = sorted(set(body) - JOB_KEYS)
    if unknown:
        raise JobSpecError(f"unknown member {', '.join(unknown)} (known: {sorted(JOB_KEYS)})")
    if "selector" not in body or "command" not in body:
        raise JobSpecError("a job needs a selector and a command")
    try:
        selector = parse_selector(body["selector"])
    except SelectorError as exc:
        raise JobSpecError(str(exc)) from None
    command = body["command"]
    if not isinstance(command, str) or not NAME.fullmatch(command):
        raise JobSpecError("command must be 1-128 chars of [A-Za-z0-9._:-]")
    args = body.get("args", {})
    if not isinstance(args, Mapping):
        raise JobSpecError("args must be an object")
    if len(json.dumps(args, separators=(",", ":"))) > MAX_JOB_ARGS_BYTES:
        raise JobSpecError(
            f"a job's args are at most {MAX_JOB_ARGS_BYTES} bytes as JSON (each agent's "
            "record keeps them): send larger ones to one agent at a time"
        )
    timeout_ms = _integer(body, "timeoutMs", default_timeout_ms, 1, max_timeout_ms)
    offline = body.get("offline", "skip")
    if not isinstance(offline, str) or offline not in {"skip", "wait"}:
        raise JobSpecError('offline must be "skip" or "wait"')
    wait_ms = _integer(body, "offlineWaitMs", DEFAULT_OFFLINE_WAIT_MS, 1, MAX_OFFLINE_WAIT_MS)
    label = body.get("requestedBy")
    if label is not None and (not isinstance(label, str) or not 1 <= len(label) <= 128):
        raise JobSpecError("requestedBy must be 1-128 characters")
    stream_output = body.get("streamOutput", False)
    if not isinstance(stream_output, bool):
        raise JobSpecError("streamOutput must be true or false")
    intent = body.get("intent")
    if intent is not None:
        args = _signed_args(intent, command, body.get("args"))
    return JobSpec(
        selector=selector,
        command=command,
        args=dict(args),
        timeout_ms=timeout_ms,
        max_concurrency=Amount.parse(
            body.get("maxConcurrency", DEFAULT_CONCURRENCY), "maxConcurrency", minimum=1
        ),
        max_errors=Amount.parse(body.get("maxErrors", DEFAULT_ERRORS), "maxErrors", minimum=0),
        offline=offline,
        offline_wait_ms=wait_ms,
        label=label,
        stream_output=stream_output,
        intent=intent,
    )


def _signed_args(intent: Any, command: str, args: Any) -> dict[str, Any]:
    """The args the operator signed (the body's own must be those, or absent)."""
    try:
        return fitting_args(intent, command, args)
    except IntentRefusedError as exc:
        raise IntentSpecError(f"intent: {exc.message}") from None


def intent_agents(spec: JobSpec) -> frozenset[str] | None:
    """The agents the job's signed intent names, or None (no intent: the selector's)."""
    if spec.intent is None:
        return None
    return frozenset(SignedIntent.from_json(spec.intent).intent.agents)


def _whole(value: Any) -> Any:
    """JSON's 1000.0 is the integer 1000 (as JSON Schema counts it); other values as they are."""
    if isinstance(value, float) and value.is_integer() and abs(value) < 2**53:
        return int(value)
    return value


def _integer(body: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = _whole(body.get(name, default))
    if not isinstance(value, int) or isinstance(value, bool) or not low <= value <= high:
        raise JobSpecError(f"{name} must be an integer between {low} and {high}")
    return value
