"""``ctl logs``, ``ctl events`` and ``ctl metrics``: what agents report, now or as it comes."""

from __future__ import annotations

import json
import time
from typing import Any, TextIO

from .api import Api, segment
from .stream import sse_events

__all__ = ["events", "logs", "metrics"]

#: ``events`` without ``-f`` prints what the server still holds, then stops once nothing
#: came for this long.
CAUGHT_UP_S = 1.0


def _when(ms: Any) -> str:
    if not isinstance(ms, int):
        return "-"
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms / 1000)) + f".{ms % 1000:03d}Z"


def _log_line(agent_id: str | None, entry: dict[str, Any], out: TextIO, *, tagged: bool) -> None:
    source = f" {entry['source']}" if entry.get("source") else ""
    who = f"{agent_id} " if tagged and agent_id else ""
    level = str(entry.get("level", "")).upper()
    out.write(f"{who}{_when(entry.get('ts'))} {level}{source}: {entry.get('message', '')}\n")
    out.flush()


def logs(api: Api, args: Any, out: TextIO) -> int:
    """The agent's last log lines; ``-f``: then each new one as it comes."""
    page = api.call("GET", f"/api/agents/{segment(args.agent)}/logs", params={"limit": args.lines})
    for entry in page["entries"]:
        if args.output == "json":
            out.write(json.dumps(entry, sort_keys=True) + "\n")
        else:
            _log_line(args.agent, entry, out, tagged=False)
    if not args.follow:
        return 0
    for event in sse_events(api, {"type": "log", "agentId": args.agent}, None):
        for entry in event["data"].get("entries", []):
            if args.output == "json":
                out.write(json.dumps(entry, sort_keys=True) + "\n")
                out.flush()
            else:
                _log_line(args.agent, entry, out, tagged=False)
    return 0


def events(api: Api, args: Any, out: TextIO) -> int:
    """Live events (``--type``, ``--agent``): what the server holds, and with ``-f`` every
    new one until interrupted. ``-o json``: one event object a line."""
    params = {"type": args.type, "agentId": args.agent, "lastEventId": "0"}
    idle = None if args.follow else CAUGHT_UP_S
    for event in sse_events(api, params, idle):
        data = event["data"]
        if args.output == "json":
            out.write(json.dumps(data, sort_keys=True) + "\n")
        else:
            out.write(
                f"{_when(data.get('ts'))} {event.get('event', '?'):<18} "
                f"{data.get('agentId', '')}  {_summary(event.get('event'), data)}\n"
            )
        out.flush()
    return 0


def _summary(kind: str | None, data: dict[str, Any]) -> str:
    if kind == "command":
        return f"{data.get('command')} {data.get('commandId')} {data.get('state')}"
    if kind == "job":
        return f"{data.get('jobId')} {data.get('state')} {data.get('progress')}"
    if kind == "log":
        return "; ".join(str(e.get("message", "")) for e in data.get("entries", []))[:200]
    if kind == "metrics":
        return f"{len(data.get('values', {}))} values"
    return ""


def metrics(api: Api, args: Any, out: TextIO) -> int:
    """The agent's latest metrics sample: a few numbers, or (``-o json``) all of it."""
    agent = api.call("GET", f"/api/agents/{segment(args.agent)}")
    sample = agent.get("metrics")
    if args.output == "json":
        out.write(json.dumps(sample, indent=2, sort_keys=True) + "\n")
        return 0
    if not sample:
        out.write(f"{args.agent}: no metrics sample yet\n")
        return 0
    out.write(f"{args.agent} at {_when(sample.get('sampleTs') or sample.get('ts'))}\n")
    values = sample.get("values", sample)
    for name, value in _flatten(values):
        out.write(f"  {name:<40} {value}\n")
    return 0


def _flatten(value: Any, prefix: str = "") -> list[tuple[str, Any]]:
    """``{"cpu": {"percent": 3}}`` as ``[("cpu.percent", 3)]``; lists as one value."""
    if not isinstance(value, dict):
        return [(prefix, value)]
    rows: list[tuple[str, Any]] = []
    for key in sorted(value):
        rows += _flatten(value[key], f"{prefix}.{key}" if prefix else str(key))
    return rows
