"""``/api/jobs``: one command to every agent a selector matches (docs/api.md, "Jobs")."""

from __future__ import annotations

from typing import Any

from quart import Quart, Response, g, request

from ...protocol.intent import signer_ids
from ...protocol.payloads import NAME
from ...transports import Requester
from ...web import BadBody, error, forbidden, int_arg, reach, strict_json, token
from ..jobs import JobError, JobRunner, JobSpecError, TargetState, parse_job
from ..jobs.spec import IntentSpecError
from ..jobs.store import Job

__all__ = ["JOBS_PATH", "add_job_routes", "find_job"]

JOBS_PATH = "/api/jobs"
DEFAULT_PAGE, MAX_PAGE = 100, 1000
_TARGET_STATES = frozenset(state.value for state in TargetState)


def add_job_routes(app: Quart, runner: JobRunner) -> None:
    service = runner.service

    @app.post(JOBS_PATH)
    async def job_create() -> tuple[dict[str, Any], int, dict[str, str]] | Response:
        """Needs ``jobs:create`` (the guard) and the command's ``commands:send`` rule."""
        try:
            body = strict_json(await request.get_data())
            spec = parse_job(
                body,
                default_timeout_ms=service.default_timeout_ms,
                max_timeout_ms=service.max_timeout_ms,
            )
        except IntentSpecError as exc:
            return error(409, "intent_rejected", str(exc))
        except (BadBody, JobSpecError) as exc:
            return error(400, "bad_request", str(exc))
        presented = token()
        if presented is not None and not presented.may_send(spec.command):
            message = f"the token {presented.name} may not send {spec.command!r}"
            return forbidden(f"commands:send:{spec.command}", message)
        asked_by = Requester(
            g.get("address") or request.remote_addr or "unknown",
            None if presented is None else presented.credential,
            spec.label,
        )
        try:
            job = await runner.create(spec, asked_by, reach())
        except JobError as exc:
            return error(exc.status, exc.code, str(exc))
        g.audit = {"jobId": job.job_id, "command": spec.command, "matched": len(job.targets)}
        if spec.intent is not None:  # who signed it (the agents check the signatures)
            g.audit["operatorKeys"] = signer_ids(spec.intent)
        location = f"{JOBS_PATH}/{job.job_id}"
        answer = {"jobId": job.job_id, "state": job.state.value, "matched": len(job.targets)}
        return {**answer, "location": location}, 202, {"Location": location}

    @app.get(JOBS_PATH)
    async def job_list() -> dict[str, Any] | Response:
        return await _jobs_page(runner)

    @app.get(f"{JOBS_PATH}/<job_id>")
    async def job_show(job_id: str) -> dict[str, Any] | Response:
        """The job, and a page of its agents (``state``, ``offset``, ``limit``)."""
        found = await find_job(runner, job_id)
        if isinstance(found, Response):
            return found
        return _job_page(found)

    @app.delete(f"{JOBS_PATH}/<job_id>")
    async def job_cancel(job_id: str) -> dict[str, Any] | Response:
        """No new sends; commands that run are cancelled where the transport can."""
        found = await find_job(runner, job_id)
        if isinstance(found, Response):
            return found
        if not _may_cancel(found):
            message = "the job reaches agents this token may not command"
            return forbidden("commands:cancel", message)
        cancelled = await runner.cancel(job_id)
        if cancelled is None and found.state.ended:
            message = f"job {job_id} already ended: {found.state.value}"
            return error(409, "job_finished", message, job=found.summary())
        if cancelled is None:  # in a cluster: another node runs it
            message = f"job {job_id} runs on another node: send the DELETE there"
            return error(409, "job_elsewhere", message, job=found.summary())
        g.audit = {"jobId": job_id}
        return cancelled.summary()


async def find_job(runner: JobRunner, job_id: str) -> Job | Response:
    if not NAME.fullmatch(job_id):
        return error(400, "invalid_job_id", "jobId: 1-128 chars of [A-Za-z0-9._:-]")
    found = await runner.find(job_id)
    if found is None or not _visible(found):
        return error(404, "unknown_job", f"no job {job_id}")
    return found


def _visible(job: Job) -> bool:
    """A token limited to some agents sees the jobs it made and those that reach only
    its agents (a job says nothing of agents the token may not see)."""
    presented = token()
    if presented is None or not presented.agents:
        return True
    if job.requester.credential == presented.credential:
        return True
    return all(presented.reaches(target.agent_id) for target in job.targets)


def _may_cancel(job: Job) -> bool:
    """Cancelling stops commands on every agent of the job: a token limited to some
    agents may cancel a job only when it may command each agent the job sends to."""
    presented = token()
    if presented is None or not presented.agents:
        return True
    return all(
        presented.reaches(target.agent_id)
        for target in job.targets
        if target.reason != "not_permitted"
    )


async def _jobs_page(runner: JobRunner) -> dict[str, Any] | Response:
    """Jobs newest first, a page at a time (``limit``, ``cursor``)."""
    limit = int_arg("limit", DEFAULT_PAGE)
    if limit is None or not 1 <= limit <= MAX_PAGE:
        return error(400, "bad_request", f"limit must be between 1 and {MAX_PAGE}")
    before = None
    cursor = request.args.get("cursor")
    if cursor is not None:
        created, _, job_id = cursor.partition("~")
        if not created.isdigit() or len(created) > 16 or not NAME.fullmatch(job_id):
            return error(400, "bad_request", "cursor: pass the previous page's next as it is")
        before = (int(created), job_id)
    listed = await runner.store.summaries(limit, before)
    presented = token()
    shown = []
    for stored in listed:
        live = runner.running(stored["jobId"])
        summary = stored if live is None else live.summary()  # running: as it is now
        if presented is None or not presented.agents:
            shown.append(summary)
        elif summary["requestedBy"]["credential"] == presented.credential:
            shown.append(summary)  # a token limited to some agents lists the jobs it made
    last = listed[-1] if len(listed) == limit else None
    following = None if last is None else f"{last['createdAt']}~{last['jobId']}"
    return {"jobs": shown, "next": following}


def _job_page(found: Job) -> dict[str, Any] | Response:
    """The job, and a page of its agents (``state``, ``offset``, ``limit``); agents the
    token may not see are left out of the page (the counts hold them)."""
    limit, offset = int_arg("limit", DEFAULT_PAGE), int_arg("offset", 0)
    if limit is None or not 1 <= limit <= MAX_PAGE or offset is None:
        return error(400, "bad_request", f"limit: 1-{MAX_PAGE}; offset: a whole number")
    state = request.args.get("state")
    if state is not None and state not in _TARGET_STATES:
        return error(400, "bad_request", f"state must be one of {sorted(_TARGET_STATES)}")
    allowed = reach()
    targets = [
        t
        for t in found.targets
        if (state is None or t.state.value == state) and allowed(t.agent_id)
    ]
    page = targets[offset : offset + limit]
    following = offset + limit if offset + limit < len(targets) else None
    return {**found.summary(), "agents": [t.to_json() for t in page], "nextOffset": following}
