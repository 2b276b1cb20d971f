"""``ctl shell AGENT``: an interactive shell on the agent, in this terminal (raw mode,
resized on SIGWINCH); ctl exits with the remote shell's status."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sys
import termios
import tty
from collections.abc import Iterator
from typing import Any, TextIO

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection

from .api import Api
from .channel import EXIT_UNAVAILABLE, open_channel, plain_errors
from .keys import signer_for

__all__ = ["shell"]

EXIT_TIMEOUT = 124


@contextlib.contextmanager
def _raw(fd: int) -> Iterator[None]:
    """The terminal in raw mode (keys go to the remote shell as typed), restored after."""
    if not os.isatty(fd):
        yield
        return
    saved = termios.tcgetattr(fd)
    try:
        tty.setraw(fd)
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSADRAIN, saved)


def shell(api: Api, args: Any, out: TextIO) -> int:
    size = shutil.get_terminal_size((80, 24))
    query = {
        "kind": "shell",
        "cols": size.columns,
        "rows": size.lines,
        "term": os.environ.get("TERM") or "xterm-256color",
    }
    signer = signer_for(args)
    if signer is not None:  # the open is an intent too (agents may require it)
        params = {k: query[k] for k in ("cols", "rows", "term")}
        query["intent"] = signer.channel("shell", params, args.agent)
    stdin = sys.stdin.fileno()
    with plain_errors(), _raw(stdin):
        return trio.run(_session, api, args.agent, query, stdin)


async def _session(api: Api, agent_id: str, query: dict[str, Any], stdin: int) -> int:
    result = EXIT_UNAVAILABLE
    async with trio.open_nursery() as nursery:
        ws = await open_channel(nursery, api.settings, agent_id, query)

        async def keys() -> None:
            # A thread reads: a non-blocking flag on the terminal would be shared with
            # stdout (and with whatever runs in this terminal after ctl).
            while data := await trio.to_thread.run_sync(
                os.read, stdin, 65536, abandon_on_cancel=True
            ):
                await ws.send_message(data)
            await ws.send_message(json.dumps({"type": "eof"}))

        async def resizes() -> None:
            with trio.open_signal_receiver(signal.SIGWINCH) as signals:
                async for _ in signals:
                    now = shutil.get_terminal_size((80, 24))
                    resize = {"type": "resize", "cols": now.columns, "rows": now.lines}
                    await ws.send_message(json.dumps(resize))

        try:
            nursery.start_soon(keys)
            nursery.start_soon(resizes)
            result = await _screen(ws)
        finally:
            # The WebSocket's reader runs in this nursery: close first, then cancel.
            with trio.CancelScope(shield=True), trio.move_on_after(2):
                await ws.aclose()
            nursery.cancel_scope.cancel()
    return result


async def _screen(ws: WebSocketConnection) -> int:
    """Print what the shell writes until the server says ``closed``: the exit status."""
    out = sys.stdout.buffer
    try:
        while True:
            message = await ws.get_message()
            if isinstance(message, bytes):
                out.write(message)
                out.flush()
                continue
            control = json.loads(message)
            if control.get("type") == "closed":
                return _status(control)
    except ConnectionClosed:
        print("\r\nmonitoring-ws ctl: the connection to the server was lost", file=sys.stderr)
        return EXIT_UNAVAILABLE


def _status(control: dict[str, Any]) -> int:
    code = control.get("exitCode")
    if isinstance(code, int):
        return code & 0xFF
    reason, message = control.get("reason"), control.get("message") or ""
    print(f"\r\nmonitoring-ws ctl: the session ended ({reason}) {message}", file=sys.stderr)
    return EXIT_TIMEOUT if reason == "timeout" else EXIT_UNAVAILABLE
