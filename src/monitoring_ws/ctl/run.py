"""``ctl run``: a command line on one agent, or (``-l``) on every agent a selector matches,
its output printed as it comes; Ctrl-C cancels it on the agents."""

from __future__ import annotations

import base64
import json
import shlex
import sys
from typing import Any, BinaryIO, TextIO

from .api import Api, ApiError, segment
from .keys import selected_ids, sign_if_keyed, signer_for
from .settings import CtlError
from .stream import follow_lines

__all__ = ["EXIT_CANCELLED", "EXIT_REFUSED", "EXIT_TIMEOUT", "EXIT_UNREACHABLE", "run", "run_job"]

#: Exit statuses besides the remote command's own (docs/cli.md).
EXIT_TIMEOUT, EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_CANCELLED = 124, 125, 69, 130
#: The record's state when it ended without an exit code, and what ctl exits with.
_EXIT_OF_STATE = {
    "timed_out": EXIT_TIMEOUT,
    "cancelled": EXIT_CANCELLED,
    "agent_disconnected": EXIT_UNREACHABLE,
}


def _words(args: Any, example: str) -> str:
    if not args.words:
        raise CtlError(f"give the command after --: {example}", 2)
    return shlex.join(args.words)


def _chunk(line: dict[str, Any]) -> bytes:
    if "base64" in line:
        return base64.b64decode(line["base64"])
    return str(line.get("text", "")).encode("utf-8", "surrogateescape")


def _binary(stream: TextIO) -> BinaryIO:
    return getattr(stream, "buffer", None) or stream  # type: ignore[return-value]


def run(api: Api, args: Any, out: TextIO) -> int:
    """One agent: its output as it comes, then its exit code as this command's."""
    if args.selector is not None:
        if args.agent is not None:  # REMAINDER takes what follows "--" only
            args.words = [args.agent, *args.words]
        return run_job(api, args, out)
    if args.agent is None:
        raise CtlError("name the agent, or -l SELECTOR: ctl run AGENT -- uname -a", 2)
    body: dict[str, Any] = {
        "command": "run",
        "args": {"command": _words(args, "ctl run AGENT -- uname -a")},
        "timeoutMs": int(args.timeout * 1000),
        "wait": False,
        "streamOutput": True,
    }
    intent = sign_if_keyed(args, "run", body["args"], [args.agent], lifetime_ms=body["timeoutMs"])
    if intent is not None:
        body["intent"] = intent
    try:
        accepted = api.call("POST", f"/api/agents/{segment(args.agent)}/commands", body)
    except ApiError as exc:
        return _refused(exc)
    command_id = accepted["commandId"]
    lines: list[dict[str, Any]] = []
    stdout, stderr = _binary(out), _binary(sys.stderr)
    cursor = {"after": 0}
    try:
        for line in follow_lines(
            api,
            f"/api/commands/{segment(command_id)}/output",
            {"follow": "true"},
            lambda: dict(cursor),
        ):
            if line.get("type") == "output":
                cursor["after"] = line["seq"]
                if args.output == "json":
                    lines.append(line)
                    continue
                target = stdout if line["stream"] == "stdout" else stderr
                target.write(_chunk(line))
                target.flush()
            elif line.get("type") == "dropped":
                cursor["after"] = line["toSeq"]
                lines.append(line)
                if args.output != "json":
                    count = line["toSeq"] - line["fromSeq"] + 1
                    sys.stderr.write(f"ctl: [{count} chunk(s) of output no longer kept]\n")
            elif line.get("type") == "end":
                return _ended(line.get("record"), lines, args, out)
    except KeyboardInterrupt:
        return _cancel(api, f"/api/commands/{segment(command_id)}", f"command {command_id}")
    raise CtlError(f"the output of {command_id} ended without its record: see ctl commands show", 1)


def _ended(
    record: dict[str, Any] | None, lines: list[dict[str, Any]], args: Any, out: TextIO
) -> int:
    if record is None:
        raise CtlError("the command's record is gone (pruned)", 1)
    if args.output == "json":
        out.write(json.dumps({"record": record, "output": lines}, indent=2, sort_keys=True) + "\n")
    answer = record.get("result") or {}
    result = answer.get("result")
    result = result if isinstance(result, dict) else {}
    code = result.get("exitCode") if record["state"] in {"succeeded", "failed"} else None
    if isinstance(code, int) and 0 <= code < 256:
        return code
    error = answer.get("error") or {}
    if record["state"] == "failed" or error:
        sys.stderr.write(f"ctl: {error.get('code')}: {error.get('message')}\n")
        return EXIT_REFUSED
    if record["state"] in _EXIT_OF_STATE:
        sys.stderr.write(
            f"ctl: command {record['commandId']} {record['state'].replace('_', ' ')}\n"
        )
        return _EXIT_OF_STATE[record["state"]]
    return 0


def _refused(exc: ApiError) -> int:
    sys.stderr.write(f"ctl: {exc}\n")
    if exc.status == 504:
        return EXIT_TIMEOUT
    if exc.status in {404, 502, 503}:
        return EXIT_UNREACHABLE
    if exc.status in {403, 409}:
        return EXIT_REFUSED
    raise exc


def _cancel(api: Api, path: str, what: str) -> int:
    """Ctrl-C: cancel on the server (a second Ctrl-C leaves without waiting)."""
    sys.stderr.write(f"\nctl: cancelling {what}\n")
    try:
        api.call("DELETE", path)
    except ApiError as exc:
        sys.stderr.write(f"ctl: {exc}\n")
    return EXIT_CANCELLED


class _Prefixer:
    """Each agent's output cut into lines, each printed with the agent's id in front."""

    def __init__(self, out: TextIO) -> None:
        self._out = out
        self._partial: dict[tuple[str, str], bytes] = {}

    def add(self, agent_id: str, stream: str, data: bytes) -> None:
        held = self._partial.pop((agent_id, stream), b"") + data
        *whole, rest = held.split(b"\n")
        for line in whole:
            self._print(agent_id, stream, line)
        if rest:
            self._partial[(agent_id, stream)] = rest

    def flush(self, agent_id: str | None = None) -> None:
        for key in [k for k in self._partial if agent_id is None or k[0] == agent_id]:
            self._print(*key, self._partial.pop(key))

    def _print(self, agent_id: str, stream: str, line: bytes) -> None:
        target = self._out if stream == "stdout" else sys.stderr
        target.write(f"{agent_id}: {line.decode('utf-8', 'replace')}\n")
        target.flush()


def run_job(api: Api, args: Any, out: TextIO) -> int:
    """A job: each agent's output prefixed by its id as it comes, a summary, non-zero when
    any agent failed."""
    body: dict[str, Any] = {
        "selector": args.selector,
        "command": "run",
        "args": {"command": _words(args, "ctl run -l env=prod -- uptime")},
        "timeoutMs": int(args.timeout * 1000),
        "maxConcurrency": args.max_concurrency,
        "maxErrors": args.max_errors,
        "streamOutput": True,
    }
    _sign_job(api, args, body)
    job_id = api.call("POST", "/api/jobs", body)["jobId"]
    prefixer = _Prefixer(out)
    ended: dict[str, dict[str, Any]] = {}
    #: A job's stream starts from the beginning when it is opened again: what was printed
    #: (up to the last chunk of each command) is skipped.
    printed: dict[str, int] = {}
    path = f"/api/jobs/{segment(job_id)}/output"
    try:
        for line in follow_lines(api, path, {"follow": "true"}, dict):
            kind, agent_id = line.get("type"), line.get("agentId")
            if kind == "output" and agent_id is not None:
                if line["seq"] <= printed.get(line["commandId"], 0):
                    continue
                printed[line["commandId"]] = line["seq"]
                if args.output != "json":
                    prefixer.add(agent_id, line["stream"], _chunk(line))
            elif kind == "end" and agent_id is not None:
                prefixer.flush(agent_id)
                ended[agent_id] = line.get("record") or {}
            elif kind == "end":
                prefixer.flush()
                return _job_summary(line["job"], ended, args, out)
    except KeyboardInterrupt:
        prefixer.flush()
        return _cancel(api, f"/api/jobs/{segment(job_id)}", f"job {job_id}")
    raise CtlError(f"the output of job {job_id} ended early: see ctl jobs show {job_id}", 1)


def _sign_job(api: Api, args: Any, body: dict[str, Any]) -> None:
    """One signature for the agents the selector names now (the job reaches no other)."""
    signer = signer_for(args)  # the key is read (and unsealed) once
    if signer is None:
        return
    agents = selected_ids(api, args.selector)
    if not agents:
        raise CtlError("no agent matches: nothing to sign", 1)
    lifetime = body["timeoutMs"] * len(agents)  # a slow job still carries it
    body["intent"] = signer.sign(
        body["command"], body["args"], agents, lifetime_ms=lifetime, selector=args.selector
    )


def _job_summary(
    job: dict[str, Any], ended: dict[str, dict[str, Any]], args: Any, out: TextIO
) -> int:
    # A remote command that exited non-zero ran (the job counts it succeeded), but a
    # script wants to know: like pssh, any such exit makes ours 1.
    nonzero = sorted(
        agent for agent, record in ended.items() if _exit_code(record) not in {0, None}
    )
    if args.output == "json":
        out.write(json.dumps({"job": job, "commands": ended}, indent=2, sort_keys=True) + "\n")
    else:
        counts = ", ".join(f"{n} {state}" for state, n in job["counts"].items() if n)
        exits = f" ({len(nonzero)} exited non-zero: {', '.join(nonzero[:10])})" if nonzero else ""
        out.write(f"job {job['jobId']} {job['state']}: {counts}{exits}\n")
    return 0 if job["state"] == "succeeded" and not nonzero else 1


def _exit_code(record: dict[str, Any]) -> int | None:
    result = (record.get("result") or {}).get("result")
    code = result.get("exitCode") if isinstance(result, dict) else None
    return code if isinstance(code, int) else None
