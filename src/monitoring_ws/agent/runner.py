"""Runs commands: at most once per ``commandId``, a concurrency limit, a timeout each."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict

import trio

from ..protocol import Command, CommandError, CommandResult
from .handlers import CommandContext, CommandFailed, Handler
from .settings import AgentSettings

__all__ = ["CommandRunner"]

log = logging.getLogger("monitoring_ws.agent")
#: Results remembered for re-sent commands (a re-sent command gets the first result).
REMEMBERED_RESULTS = 1000


class CommandRunner:
    """Turns a verified ``Command`` into its ``CommandResult``."""

    def __init__(self, settings: AgentSettings, handlers: dict[str, Handler]) -> None:
        self.settings = settings
        self.handlers = handlers
        self._limiter = trio.CapacityLimiter(settings.command_concurrency)
        self._results: OrderedDict[str, CommandResult] = OrderedDict()
        self._running: set[str] = set()

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(sorted(self.handlers))

    async def execute(self, command: Command) -> CommandResult | None:
        """The result to send; None when the same command is still running (it will answer)."""
        known = self._results.get(command.command_id)
        if known is not None:
            return known
        if command.command_id in self._running:
            return None
        self._running.add(command.command_id)
        try:
            result = await self._run(command)
        finally:
            self._running.discard(command.command_id)
        self._results[command.command_id] = result
        while len(self._results) > REMEMBERED_RESULTS:
            self._results.popitem(last=False)
        return result

    async def _run(self, command: Command) -> CommandResult:
        started = time.monotonic()

        def failed(code: str, message: str) -> CommandResult:
            elapsed = int((time.monotonic() - started) * 1000)
            return CommandResult(
                command.command_id, False, elapsed, error=CommandError(code, message)
            )

        handler = self.handlers.get(command.command)
        if handler is None:
            return failed("unknown_command", f"this agent has no command {command.command!r}")
        timeout_s = command.timeout_ms / 1000
        context = CommandContext(self.settings, timeout_s)
        async with self._limiter:
            with trio.move_on_after(timeout_s) as scope:
                try:
                    value = await handler(command.args, context)
                except CommandFailed as exc:
                    return failed(exc.code, exc.message)
                except Exception as exc:  # a plugin's bug must not take the agent down
                    log.warning("command %s failed: %r", command.command, exc)
                    return failed("handler_error", f"{type(exc).__name__}: {exc}")
        if scope.cancelled_caught:
            return failed("timeout", f"stopped after {command.timeout_ms} ms")
        elapsed = int((time.monotonic() - started) * 1000)
        return CommandResult(command.command_id, True, elapsed, result=value)
