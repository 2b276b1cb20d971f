"""``ctl update -l SELECTOR VERSION``: the agents a selector matches install a signed
release, as a job with its rate control (docs/install.md, "Signed updates"): one line per
agent as each answers, then the job's summary."""

from __future__ import annotations

from typing import Any, TextIO

from .api import Api, segment
from .run import _cancel, _job_summary, _sign_job
from .settings import CtlError
from .stream import follow_lines

__all__ = ["update"]


def _line(agent_id: str, record: dict[str, Any]) -> str:
    answer = record.get("result") or {}
    result, error = answer.get("result"), answer.get("error")
    if isinstance(result, dict) and result.get("updated"):
        return f"{agent_id}: updating {result.get('from')} -> {result.get('to')}"
    if isinstance(result, dict):
        return f"{agent_id}: {result.get('message', 'unchanged')} ({result.get('version')})"
    if isinstance(error, dict):
        return f"{agent_id}: refused: {error.get('code')}: {error.get('message')}"
    return f"{agent_id}: {record.get('state', 'ended').replace('_', ' ')}"


def update(api: Api, args: Any, out: TextIO) -> int:
    """Exits 0 only when every agent took the update (or already ran that version)."""
    if args.selector is None:
        raise CtlError("say which agents: ctl update -l env=prod 0.18.0", 2)
    body = {
        "selector": args.selector,
        "command": "update",
        "args": {"version": args.version, "deadlineS": args.deadline},
        "timeoutMs": int(args.timeout * 1000),
        "maxConcurrency": args.max_concurrency,
        "maxErrors": args.max_errors,
    }
    _sign_job(api, args, body)
    job_id = api.call("POST", "/api/jobs", body)["jobId"]
    ended: dict[str, dict[str, Any]] = {}
    path = f"/api/jobs/{segment(job_id)}/output"
    try:
        for line in follow_lines(api, path, {"follow": "true"}, dict):
            kind, agent_id = line.get("type"), line.get("agentId")
            if kind == "end" and agent_id is not None:
                ended[agent_id] = line.get("record") or {}
                if args.output != "json":
                    out.write(_line(agent_id, ended[agent_id]) + "\n")
                    out.flush()
            elif kind == "end":
                return _job_summary(line["job"], ended, args, out)
    except KeyboardInterrupt:
        return _cancel(api, f"/api/jobs/{segment(job_id)}", f"job {job_id}")
    raise CtlError(f"the job {job_id} ended early: see ctl jobs show {job_id}", 1)
