"""Following the API's streams: NDJSON output lines (``/output?follow=true``) and
server-sent events (``/api/events``), each on a connection of its own, resumed after a
dropped connection from the last line read."""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterator
from typing import Any

from .api import Api, ApiError
from .settings import CtlError

__all__ = ["follow_lines", "sse_events"]

#: A dropped stream is opened again this often, for at most this long (a server restart
#: takes seconds; its agents reconnect and go on).
RETRY_EVERY_S = 0.5
RETRY_FOR_S = 120.0
#: The longest line read (an output line is at most ~400 KiB: 64 KiB of control bytes,
#: escaped): a longer one means the other end is not this API.
MAX_LINE = 4 << 20


def follow_lines(
    api: Api, path: str, params: dict[str, Any], cursor: Callable[[], dict[str, Any]]
) -> Iterator[dict[str, Any]]:
    """Each JSON line of ``path`` up to its last ``end`` line; a connection that drops
    before it (a server restart ends the response early) is opened again with
    ``cursor()``'s parameters added (where to resume)."""
    failing_since: float | None = None
    while True:
        try:
            with api.open_stream(path, {**params, **cursor()}) as response:
                failing_since = None
                for line in _json_lines(response):
                    yield line
                    if line.get("type") == "end" and "agentId" not in line:
                        return  # a job's agents end before the job
            raise ConnectionResetError("the stream ended before its end line")
        except (ApiError, KeyboardInterrupt):
            raise
        except (CtlError, OSError, ValueError) as exc:
            if isinstance(exc, CtlError) and exc.code != 69:
                raise  # not "cannot reach": opening it again would not help
            now = time.monotonic()
            failing_since = failing_since or now
            if now - failing_since > RETRY_FOR_S:
                raise CtlError(
                    f"the output stream stopped and did not come back: {exc}", 69
                ) from None
            time.sleep(RETRY_EVERY_S)


def _json_lines(response: Any) -> Iterator[dict[str, Any]]:
    """The response's JSON lines until it ends."""
    while raw := response.readline(MAX_LINE):
        if not raw.endswith(b"\n"):
            raise CtlError(f"a line of the stream is over {MAX_LINE} bytes", 1)
        if raw.strip():
            yield json.loads(raw)


def sse_events(api: Api, params: dict[str, Any], idle_s: float | None) -> Iterator[dict[str, Any]]:
    """``/api/events``' events as ``{"id", "event", "data"}``; ``idle_s``: stop when none
    came for that long (None: follow until interrupted)."""
    last: str | None = None
    while True:
        extra = {} if last is None else {"lastEventId": last}
        try:
            with api.open_stream("/api/events", {**params, **extra}, idle_s=idle_s) as response:
                event: dict[str, Any] = {}
                while True:
                    raw = response.readline(MAX_LINE)
                    if not raw:
                        break
                    text = raw.decode("utf-8", "replace").rstrip("\r\n")
                    if not text:
                        if "data" in event:
                            last = event.get("id", last)
                            yield event
                        if event.get("event") in {"revoked", "dropped"}:
                            return
                        event = {}
                    elif not text.startswith(":"):
                        name, _, value = text.partition(":")
                        value = value.removeprefix(" ")
                        event[name] = json.loads(value) if name == "data" else value
        except TimeoutError:
            return  # idle: nothing more came
        except ApiError:
            raise
        except (OSError, CtlError) as exc:
            if idle_s is not None:
                raise CtlError(f"the event stream stopped: {exc}", 69) from None
        time.sleep(RETRY_EVERY_S)
