"""The floor under the command routes: a bare route on Hypercorn's trio worker, as a
Quart-Trio app and as a raw ASGI app, and the raw ASGI app on our lean listener
(``api_server = "lean"``), answering a JSON POST at once (no agent behind it).

    .venv/bin/python bench/bench_floor.py [--app quart asgi lean] [--callers 32] [--seconds 5]

Same keep-alive callers as ``bench_gateway.py commands``; the server pinned to CPU 0, the
callers to CPU 1; loopback only. One JSON line per app.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from functools import partial
from typing import Any

import trio

from fleet import HttpCaller, cpu_seconds, emit, summary

BODY = b'{"command": "ping", "args": {}}'
ANSWER = {"commandId": "00000000-0000-0000-0000-000000000000", "ok": True, "durationMs": 0}


def serve(app_kind: str) -> None:
    """The server side (a child process): print the port, serve until killed."""
    from hypercorn.config import Config  # noqa: PLC0415 - only in the child
    from hypercorn.trio import serve as hypercorn_serve  # noqa: PLC0415
    from quart_trio import QuartTrio  # noqa: PLC0415

    if app_kind == "quart":
        quart = QuartTrio(__name__)

        @quart.post("/api/agents/<agent_id>/command")
        async def command(agent_id: str) -> dict[str, Any]:
            from quart import request  # noqa: PLC0415

            json.loads(await request.get_data())
            return {**ANSWER, "agentId": agent_id}

        app: Any = quart
    else:

        async def app(scope: Any, receive: Any, send: Any) -> None:
            if scope["type"] == "lifespan":
                while True:
                    message = await receive()
                    kind = message["type"].rsplit(".", 1)[1]
                    await send({"type": f"lifespan.{kind}.complete"})
                    if kind == "shutdown":
                        return
            body = b""
            while True:
                message = await receive()
                body += message.get("body", b"")
                if not message.get("more_body"):
                    break
            json.loads(body)
            answer = json.dumps({**ANSWER, "agentId": scope["path"].split("/")[3]}).encode()
            headers = [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(answer)).encode()),
            ]
            await send({"type": "http.response.start", "status": 200, "headers": headers})
            await send({"type": "http.response.body", "body": answer})

    config = Config()
    config.bind = ["127.0.0.1:0"]
    config.accesslog = None

    async def main() -> None:
        async with trio.open_nursery() as nursery:
            if app_kind == "lean":  # the raw app on our own listener (api_server = "lean")
                binds = await nursery.start(partial(_serve_lean, app))
            else:
                binds = await nursery.start(hypercorn_serve, app, config)
            print(binds[0].rsplit(":", 1)[1], flush=True)

    trio.run(main)


async def _serve_lean(app: Any, *, task_status: Any) -> None:
    from monitoring_ws.host.serving.lean import LeanSettings, serve_lean  # noqa: PLC0415

    settings = LeanSettings(
        max_message_bytes=1 << 20,
        handshake_timeout_s=10,
        body_timeout_s=10,
        max_body_bytes=1 << 20,
        keep_alive=True,
    )
    await serve_lean(
        {},
        app,
        ("127.0.0.1", 0),
        settings,
        tls=None,
        shutdown_trigger=trio.sleep_forever,
        graceful_timeout_s=1,
        task_status=task_status,
    )


async def load(port: int, callers: int, seconds: float, pid: int) -> dict[str, Any]:
    latencies: list[float] = []

    async def caller(deadline: float, record: bool) -> None:
        http = HttpCaller("127.0.0.1", port)
        await http.connect()
        while time.perf_counter() < deadline:
            start = time.perf_counter()
            status, _ = await http.post("/api/agents/a-1/command", BODY)
            assert status == 200, status
            if record:
                latencies.append(time.perf_counter() - start)

    for record, duration in ((False, 1.0), (True, seconds)):
        deadline, start, cpu = time.perf_counter() + duration, time.perf_counter(), cpu_seconds(pid)
        async with trio.open_nursery() as nursery:
            for _ in range(callers):
                nursery.start_soon(caller, deadline, record)
        elapsed, cpu = time.perf_counter() - start, cpu_seconds(pid) - cpu
    return {
        "callers": callers,
        "requests": len(latencies),
        "req_per_s": round(len(latencies) / elapsed),
        **summary(latencies),
        "server_busy": round(cpu / elapsed, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    kinds = ["quart", "asgi", "lean"]
    parser.add_argument("--app", nargs="*", choices=kinds, default=kinds)
    parser.add_argument("--callers", type=int, default=32)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--serve", choices=kinds, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve(args.serve)
        return
    os.sched_setaffinity(0, {1})
    machine = f"{platform.machine()} {os.cpu_count()} cpu, python {platform.python_version()}"
    for kind in args.app:
        server = subprocess.Popen(  # noqa: S603 - our own command line
            [sys.executable, __file__, "--serve", kind],
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: os.sched_setaffinity(0, {0}),  # noqa: PLW1509
        )
        try:
            assert server.stdout is not None
            port = int(server.stdout.readline())
            result = trio.run(load, port, args.callers, args.seconds, server.pid)
        finally:
            server.terminate()
            server.wait(timeout=30)
        emit({"bench": "floor", "app": kind, **result, "machine": machine})


if __name__ == "__main__":
    main()
