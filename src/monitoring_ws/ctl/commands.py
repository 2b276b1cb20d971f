"""What each ``ctl`` subcommand does with the API, and how it shows it (``-o table`` for
people, ``-o json`` for scripts)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable, Sequence
from typing import Any, TextIO

from .api import Api, segment
from .forward import forward
from .keys import keys_create, keys_list
from .run import run, run_job
from .settings import CtlError
from .shell import shell
from .update import keys_trust, update
from .watch import events, logs, metrics

__all__ = ["COMMANDS"]

Handler = Callable[[Api, Any, TextIO], int]


def _json(value: Any, out: TextIO) -> int:
    out.write(json.dumps(value, indent=2, sort_keys=True) + "\n")
    return 0


def _table(rows: Sequence[Sequence[Any]], heads: Sequence[str], out: TextIO) -> int:
    """Columns as wide as their widest cell; the last one cut to the terminal."""
    cells = [[str(head).upper() for head in heads]] + [
        ["" if value is None else str(value) for value in row] for row in rows
    ]
    widths = [max(len(row[i]) for row in cells) for i in range(len(heads))]
    room = shutil.get_terminal_size((120, 24)).columns
    for row in cells:
        line = "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True))
        out.write(line.rstrip()[:room] + "\n")
    return 0


def _labels(labels: dict[str, str] | None) -> str:
    return ",".join(f"{k}={v}" for k, v in sorted((labels or {}).items()))


def agents_ls(api: Api, args: Any, out: TextIO) -> int:
    answer = api.call("GET", "/api/agents", params={"selector": args.selector})
    if args.output == "json":
        return _json(answer["agents"], out)
    rows = []
    for agent in answer["agents"]:
        via = ",".join(name for name, on in (agent.get("transports") or {}).items() if on)
        row = [agent["agentId"], "connected" if agent["connected"] else "offline", via]
        if args.output == "wide":
            details = agent.get("details", {}).get("websocket", {})
            row += [details.get("hostname", ""), details.get("agentVersion", "")]
        rows.append([*row, _labels(agent.get("labels"))])
    heads = ["agent", "state", "via"]
    heads += ["host", "version"] if args.output == "wide" else []
    return _table(rows, [*heads, "labels"], out)


def agents_show(api: Api, args: Any, out: TextIO) -> int:
    return _json(api.call("GET", f"/api/agents/{segment(args.agent)}"), out)


def agents_label(api: Api, args: Any, out: TextIO) -> int:
    """``k=v`` sets, ``k-`` removes (as kubectl)."""
    changes: dict[str, str | None] = {}
    for written in args.labels:
        if written.endswith("-") and "=" not in written:
            changes[written[:-1]] = None
        elif "=" in written:
            key, _, value = written.partition("=")
            changes[key] = value
        else:
            raise CtlError(f"{written!r}: write key=value to set a label, key- to remove it", 2)
    answer = api.call("PATCH", f"/api/agents/{segment(args.agent)}/labels", {"labels": changes})
    if args.output == "json":
        return _json(answer, out)
    out.write(f"{args.agent}: {_labels(answer['labels']) or '(no labels)'}\n")
    return 0


def jobs_run(api: Api, args: Any, out: TextIO) -> int:
    """``ctl jobs run -l SELECTOR``: ``ctl run -l SELECTOR``."""
    return run_job(api, args, out)


def jobs_ls(api: Api, args: Any, out: TextIO) -> int:
    jobs = api.call("GET", "/api/jobs", params={"limit": args.limit})["jobs"]
    if args.output == "json":
        return _json(jobs, out)
    rows = [
        [
            j["jobId"],
            j["state"],
            j["command"],
            f"{j['progress']['done']}/{j['progress']['total']}",
            j["selector"] if isinstance(j["selector"], str) else json.dumps(j["selector"]),
        ]
        for j in jobs
    ]
    return _table(rows, ["job", "state", "command", "done", "selector"], out)


def _show(path: str) -> Handler:
    """``show``: the resource under ``path`` (``/api/jobs/``), named by ``args.id``."""

    def show(api: Api, args: Any, out: TextIO) -> int:
        return _json(api.call("GET", path + segment(args.id)), out)

    return show


def _cancel(path: str, noun: str) -> Handler:
    """``cancel``: ``DELETE`` it; its state after (``-o json``: the whole answer)."""

    def cancel(api: Api, args: Any, out: TextIO) -> int:
        answer = api.call("DELETE", path + segment(args.id))
        if args.output == "json":
            return _json(answer, out)
        out.write(f"{noun} {args.id}: {answer.get('state')}\n")
        return 0

    return cancel


def commands_ls(api: Api, args: Any, out: TextIO) -> int:
    params = {"agentId": args.agent, "limit": args.limit}
    records = api.call("GET", "/api/commands", params=params)["commands"]
    if args.output == "json":
        return _json(records, out)
    rows = [[r["commandId"], r["agentId"], r["command"], r["state"]] for r in records]
    return _table(rows, ["command id", "agent", "command", "state"], out)


COMMANDS: dict[str, Handler] = {
    "agents ls": agents_ls,
    "agents show": agents_show,
    "agents label": agents_label,
    "run": run,
    "shell": shell,
    "forward": forward,
    "update": update,
    "keys create": keys_create,
    "keys list": keys_list,
    "keys trust": keys_trust,
    "jobs run": jobs_run,
    "jobs ls": jobs_ls,
    "jobs show": _show("/api/jobs/"),
    "jobs cancel": _cancel("/api/jobs/", "job"),
    "commands ls": commands_ls,
    "commands show": _show("/api/commands/"),
    "commands cancel": _cancel("/api/commands/", "command"),
    "logs": logs,
    "events": events,
    "metrics": metrics,
}
