"""``ctl update -l SELECTOR VERSION`` (the agents install a signed release) and ``ctl keys
trust -l SELECTOR KEY...`` (they trust these operator keys from now on): jobs with their
rate control, one line per agent as each answers, then the job's summary."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any, TextIO

from .api import Api, segment
from .keys import default_key
from .run import _cancel, _job_summary, _sign_job
from .settings import CtlError
from .stream import follow_lines

__all__ = ["keys_trust", "update"]


def _answer_of(record: dict[str, Any]) -> tuple[Any, Any]:
    answer = record.get("result") or {}
    return answer.get("result"), answer.get("error")


def _updated(agent_id: str, record: dict[str, Any]) -> str:
    result, error = _answer_of(record)
    if isinstance(result, dict) and result.get("updated"):
        return f"{agent_id}: updating {result.get('from')} -> {result.get('to')}"
    if isinstance(result, dict):
        return f"{agent_id}: {result.get('message', 'unchanged')} ({result.get('version')})"
    if isinstance(error, dict):
        return f"{agent_id}: refused: {error.get('code')}: {error.get('message')}"
    return f"{agent_id}: {record.get('state', 'ended').replace('_', ' ')}"


def _trusted(agent_id: str, record: dict[str, Any]) -> str:
    result, error = _answer_of(record)
    if isinstance(result, dict):
        return f"{agent_id}: trusts {len(result.get('operatorKeys') or [])} operator key(s)"
    if isinstance(error, dict):
        return f"{agent_id}: refused: {error.get('code')}: {error.get('message')}"
    return f"{agent_id}: {record.get('state', 'ended').replace('_', ' ')}"


def _job(
    api: Api,
    args: Any,
    out: TextIO,
    command: str,
    command_args: Mapping[str, Any],
    *,
    line: Callable[[str, dict[str, Any]], str],
) -> int:
    """Start the job (signed when this operator has a key), print each agent's answer."""
    body = {
        "selector": args.selector,
        "command": command,
        "args": dict(command_args),
        "timeoutMs": int(args.timeout * 1000),
        "maxConcurrency": args.max_concurrency,
        "maxErrors": args.max_errors,
    }
    _sign_job(api, args, body)
    job_id = api.call("POST", "/api/jobs", body)["jobId"]
    ended: dict[str, dict[str, Any]] = {}
    path = f"/api/jobs/{segment(job_id)}/output"
    try:
        for event in follow_lines(api, path, {"follow": "true"}, dict):
            kind, agent_id = event.get("type"), event.get("agentId")
            if kind == "end" and agent_id is not None:
                ended[agent_id] = event.get("record") or {}
                if args.output != "json":
                    out.write(line(agent_id, ended[agent_id]) + "\n")
                    out.flush()
            elif kind == "end":
                return _job_summary(event["job"], ended, args, out)
    except KeyboardInterrupt:
        return _cancel(api, f"/api/jobs/{segment(job_id)}", f"job {job_id}")
    raise CtlError(f"the job {job_id} ended early: see ctl jobs show {job_id}", 1)


def update(api: Api, args: Any, out: TextIO) -> int:
    """Exits 0 only when every agent took the update (or already ran that version)."""
    if args.selector is None:
        raise CtlError("say which agents: ctl update -l env=prod 0.18.0", 2)
    wanted = {"version": args.version, "deadlineS": args.deadline}
    return _job(api, args, out, "update", wanted, line=_updated)


def keys_trust(api: Api, args: Any, out: TextIO) -> int:
    """The agents trust exactly these keys from now on; it must be signed by a key they
    trust now, so this operator needs one."""
    if getattr(args, "no_sign", False) or default_key(getattr(args, "key", None)) is None:
        raise CtlError(
            "changing the agents' operator keys must be signed by a key they trust now: "
            "ctl keys create, or --key NAME",
            2,
        )
    require: bool | list[str] = True
    if args.require == "none":
        require = False
    elif args.require != "all":
        require = [name for name in args.require.split(",") if name]
    wanted = {"keys": list(args.keys), "require": require}
    return _job(api, args, out, "operator_keys", wanted, line=_trusted)
