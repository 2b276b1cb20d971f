"""``GET /api/events``: live events as server-sent events (docs/api.md, "Live events")."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

from quart import Quart, Response, request

from ...protocol import AGENT_ID
from ...web import ID_RULE, error, token
from ..events import DROPPED, EVENT_TYPES, KEEPALIVE, EventHub
from ..summary import summarize
from ..tokens import TokenSet

__all__ = ["add_event_routes"]


def add_event_routes(app: Quart, hub: EventHub, tokens: TokenSet | None = None) -> None:
    """``tokens``: the API's; a stream whose token a reload removed (or changed) ends."""
    if tokens is not None:
        tokens.watch(hub.nudge)

    @app.get("/api/events")
    async def events() -> Response:
        """``?type=metrics,log&agentId=web-1``; ``Last-Event-ID`` resumes."""
        types = set(filter(None, request.args.get("type", "").split(","))) or set(EVENT_TYPES)
        if not types <= EVENT_TYPES:
            known = ", ".join(sorted(EVENT_TYPES))
            return error(400, "bad_request", f"type must be some of {known}")
        agent = request.args.get("agentId")
        if agent is not None and not AGENT_ID.fullmatch(agent):
            return error(400, "invalid_agent_id", f"agentId: {ID_RULE}")
        # A fleet table needs a few numbers of each sample, not the whole sample.
        digest = request.args.get("metrics")
        if digest not in {None, "summary"}:
            return error(400, "bad_request", "metrics must be summary (or left out)")
        last = request.headers.get("Last-Event-ID") or request.args.get("lastEventId")
        if last is not None and (not last.isdigit() or len(last) > 18):
            return error(400, "bad_request", "Last-Event-ID must be an event id")
        presented = token()  # read now: the stream outlives the request context

        def reaches(agent_id: str) -> bool:
            return (agent is None or agent_id == agent) and (
                presented is None or presented.reaches(agent_id)
            )

        async def stream() -> AsyncIterator[bytes]:
            yield b": connected\n\n"
            subscription = hub.subscribe(
                types=types, agents=reaches, after=None if last is None else int(last)
            )
            checked = None if tokens is None else tokens.version
            async for item in subscription:
                if tokens is not None and tokens.version != checked:  # reloaded since
                    if presented is not None and not tokens.holds(presented):
                        yield b"event: revoked\ndata: {}\n\n"
                        return  # the token is gone: nothing more for its holder
                    checked = tokens.version
                if item == KEEPALIVE:
                    yield b": keepalive\n\n"
                elif item == DROPPED:
                    yield b"event: dropped\ndata: {}\n\n"
                    return
                elif not isinstance(item, str):
                    data = item.to_json()
                    if digest and item.type == "metrics":
                        data["summary"] = summarize(data["sampleTs"], data.pop("values"))
                    body = json.dumps(data, separators=(",", ":"))
                    yield f"id: {item.id}\nevent: {item.type}\ndata: {body}\n\n".encode()

        response = Response(stream(), mimetype="text/event-stream")
        response.headers["Cache-Control"] = "no-cache"
        response.headers["X-Accel-Buffering"] = "no"  # nginx: pass events through at once
        response.timeout = None
        return response
