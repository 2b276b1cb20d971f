"""Built-in agent commands, and how handlers are found (the ``monitoring_ws.agent_commands``
entry-point group: a plugin adds a command by naming an async function there)."""

from __future__ import annotations

import functools
import logging
import subprocess
from collections.abc import Awaitable, Callable, Mapping
from importlib.metadata import entry_points
from typing import TYPE_CHECKING, Any

import attrs
import trio

from . import metrics
from .settings import AgentSettings

if TYPE_CHECKING:
    from .output import OutputSink

log = logging.getLogger("monitoring_ws.agent")

__all__ = ["ENTRY_POINT_GROUP", "CommandContext", "CommandFailed", "Handler", "discover"]

ENTRY_POINT_GROUP = "monitoring_ws.agent_commands"


@attrs.frozen
class CommandContext:
    """What a handler may use."""

    settings: AgentSettings
    timeout_s: float
    #: Set when the server asked for the output as it happens (the ``output`` extension):
    #: a handler that can, writes there; one that cannot answers as usual.
    output: OutputSink | None = None
    #: Asks the agent to restart through its launcher once this command's answer is in
    #: the outbox (``update``); None where the agent cannot.
    restart: Callable[[], None] | None = None


Handler = Callable[[Mapping[str, Any], CommandContext], Awaitable[Any]]


class CommandFailed(Exception):
    """A handler's refusal or failure: ``code`` is a name, ``message`` for people."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def discover() -> dict[str, Handler]:
    """Every handler registered in the entry-point group, by command name. One that does
    not import is logged and left out (the agent still reports and answers the rest)."""
    handlers: dict[str, Handler] = {}
    for entry in entry_points(group=ENTRY_POINT_GROUP):
        try:
            handlers[entry.name] = entry.load()
        except Exception as exc:
            dist = entry.dist.name if entry.dist is not None else "?"
            log.error(  # noqa: TRY400 - the cause is in the line; a traceback would be noise
                "command %r from %s (%s) is left out: it does not load: %s: %s",
                entry.name,
                dist,
                entry.value,
                type(exc).__name__,
                exc,
            )
    return handlers


async def ping(args: Mapping[str, Any], context: CommandContext) -> dict[str, Any]:
    """Answers at once: proves the round trip."""
    return {"pong": True, "agentId": context.settings.agent_id}


async def collect_metrics(args: Mapping[str, Any], context: CommandContext) -> dict[str, Any]:
    """A metrics sample, now."""
    return await trio.to_thread.run_sync(metrics.collect)


def _last_lines(path: str, count: int, cap: int) -> list[str]:
    with open(path, "rb") as handle:
        handle.seek(0, 2)
        size = handle.tell()
        handle.seek(max(0, size - cap))
        data = handle.read()
    lines = data.decode("utf-8", "replace").splitlines()
    return lines[-count:]


async def tail_log(args: Mapping[str, Any], context: CommandContext) -> dict[str, Any]:
    """The last ``lines`` lines (default 100) of a configured log file ``path``."""
    path = args.get("path")
    configured = {str(p) for p in context.settings.log_files}
    if not isinstance(path, str) or path not in configured:
        raise CommandFailed(
            "not_allowed", f"path must be one of the configured log files: {sorted(configured)}"
        )
    count = args.get("lines", 100)
    if isinstance(count, bool) or not isinstance(count, int) or not 1 <= count <= 10_000:
        raise CommandFailed("bad_args", "lines must be an integer from 1 to 10000")
    cap = context.settings.output_cap_bytes
    try:
        lines = await trio.to_thread.run_sync(_last_lines, path, count, cap)
    except OSError as exc:
        raise CommandFailed("io_error", str(exc)) from None
    return {"path": path, "lines": lines}


async def run(args: Mapping[str, Any], context: CommandContext) -> dict[str, Any]:
    """Run an allow-listed command line (``{"command": "uptime"}``) without a shell."""
    command_line = args.get("command")
    if not isinstance(command_line, str) or not command_line.strip():
        raise CommandFailed("bad_args", 'args.command must be a command line, e.g. "uptime"')
    arguments = context.settings.allowed_commands.allows_line(command_line)
    if arguments is None:
        raise CommandFailed(
            "not_allowed",
            "this command line is not in the agent's allowedCommands (matched word for word; "
            "re:PATTERN words match one argument each)",
        )
    if context.output is not None:
        return await _run_streamed(arguments, context, context.output)
    cap = context.settings.output_cap_bytes
    outputs: dict[str, tuple[bytes, bool]] = {}
    async with trio.open_nursery() as nursery:
        process, out, err = await _child(nursery, arguments, context)
        nursery.start_soon(_read_capped, out, cap, outputs, "stdout")
        nursery.start_soon(_read_capped, err, cap, outputs, "stderr")
    stdout, stdout_cut = outputs["stdout"]
    stderr, stderr_cut = outputs["stderr"]
    return {
        "exitCode": process.returncode,
        "stdout": stdout.decode("utf-8", "replace"),
        "stderr": stderr.decode("utf-8", "replace"),
        "truncated": stdout_cut or stderr_cut,
    }


async def _child(
    nursery: trio.Nursery, arguments: list[str], context: CommandContext
) -> tuple[trio.Process, trio.abc.ReceiveStream, trio.abc.ReceiveStream]:
    """The child in ``nursery`` (killed when it is cancelled), no stdin, the allowed
    environment; its stdout and stderr pipes."""
    process: trio.Process = await nursery.start(
        functools.partial(
            trio.run_process,
            arguments,
            stdin=subprocess.DEVNULL,
            env=context.settings.child_environment(),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            check=False,
        )
    )
    assert process.stdout is not None  # noqa: S101 - asked for a pipe above
    assert process.stderr is not None  # noqa: S101
    return process, process.stdout, process.stderr


async def _run_streamed(
    arguments: list[str], context: CommandContext, sink: OutputSink
) -> dict[str, Any]:
    """``run`` with its output sent as it comes; the result holds the totals."""
    async with trio.open_nursery() as nursery:
        process, out, err = await _child(nursery, arguments, context)
        nursery.start_soon(_pump, out, "stdout", sink)
        nursery.start_soon(_pump, err, "stderr", sink)
    return {"exitCode": process.returncode, **sink.totals, "chunks": sink.seq, "streamed": True}


#: A read waits this long for more of the same burst, so that a command printing line
#: by line costs a frame per burst, not per line.
GATHER_S = 0.005
_READ_BYTES = 65_536


async def _pump(stream: trio.abc.ReceiveStream, name: str, sink: OutputSink) -> None:
    ended = False
    while not ended:
        data = await stream.receive_some(_READ_BYTES)
        if not data:
            break
        with trio.move_on_after(GATHER_S):  # a cancelled read loses nothing (trio)
            while len(data) < _READ_BYTES:
                more = await stream.receive_some(_READ_BYTES - len(data))
                if not more:
                    ended = True
                    break
                data += more
        await sink.write(name, bytes(data))
    await sink.write(name, b"", final=True)


async def _read_capped(
    stream: trio.abc.ReceiveStream, cap: int, into: dict[str, tuple[bytes, bool]], name: str
) -> None:
    """Keep the first ``cap`` bytes, drain (and drop) the rest so the child never blocks."""
    kept = bytearray()
    cut = False
    async for chunk in stream:
        room = cap - len(kept)
        if room > 0:
            kept += chunk[:room]
        cut = cut or len(chunk) > room
    into[name] = (bytes(kept), cut)
