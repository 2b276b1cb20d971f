"""Runs commands: at most once per ``commandId`` (across restarts, with a journal), a
concurrency limit, a timeout each, and a cancel the server may send."""

from __future__ import annotations

import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

import trio

from ..protocol import (
    CANCELLED,
    Command,
    CommandError,
    CommandResult,
    canonicalize,
    encoded_size,
)
from .handlers import CommandContext, CommandFailed, Handler
from .intents import KEYS_COMMAND, IntentGate
from .settings import AgentSettings

if TYPE_CHECKING:
    from .output import OutputSink

__all__ = ["CommandJournal", "CommandRunner"]

log = logging.getLogger("monitoring_ws.agent")
#: Results remembered for re-sent commands (a re-sent command gets the first result): at
#: most this many, and about this many bytes.
REMEMBERED_RESULTS = 1000
REMEMBERED_BYTES = 16 << 20
#: Commands waiting for a free slot (``commandConcurrency`` busy): at most this many, and
#: about this many bytes of arguments; past either a command is answered ``busy`` at once
#: and not run (it may be sent again).
MAX_WAITING = 64
MAX_WAITING_BYTES = 16 << 20


class CommandJournal(Protocol):
    """Which commands this agent has started, kept across restarts (the outbox's file)."""

    def start_command(self, command_id: str) -> bool: ...


class CommandRunner:
    """Turns a verified ``Command`` into its ``CommandResult``."""

    def __init__(self, settings: AgentSettings, handlers: dict[str, Handler]) -> None:
        self.settings = settings
        self.handlers = handlers
        #: Set by the ``Agent`` to its outbox, so a restarted agent never runs a command twice.
        self.journal: CommandJournal | None = None
        #: Operator signatures (requireOperatorSignature); its nonces move to the outbox
        #: with the journal.
        self.gate = IntentGate(settings)
        if settings.operator_keys:  # the trusted keys change by a signed command only
            self.handlers = {**handlers, KEYS_COMMAND: self.gate.change_keys}
        #: Set by the ``Agent``: where a command asked to stream its output writes it.
        self.output_sink: Callable[[Command], OutputSink] | None = None
        #: Set by a handler through ``CommandContext.restart``: the ``Agent`` restarts
        #: once that command's result is in its outbox.
        self.restart_requested = False
        self._limiter = trio.CapacityLimiter(settings.command_concurrency)
        self._results: OrderedDict[str, tuple[CommandResult, int]] = OrderedDict()
        self._results_bytes = 0
        self._running: dict[str, trio.CancelScope] = {}
        self._cancelled: set[str] = set()
        #: Commands waiting for a slot, and the bytes of their arguments.
        self._waiting = 0
        self._waiting_bytes = 0

    @property
    def commands(self) -> tuple[str, ...]:
        return tuple(sorted(self.handlers))

    async def execute(self, command: Command) -> CommandResult | None:
        """The result to send; None when the same command is still running (it will answer)."""
        known = self._results.get(command.command_id)
        if known is not None:
            return known[0]
        if command.command_id in self._running:
            return None
        waits = 0
        if self._limiter.available_tokens == 0:
            waits = 256 + encoded_size(command.args)
            if self._waiting >= MAX_WAITING or self._waiting_bytes + waits > MAX_WAITING_BYTES:
                # Neither run nor journalled nor remembered: a re-send may run it later.
                log.warning("command %s refused: too many commands waiting", command.command_id)
                return CommandResult(
                    command.command_id,
                    False,
                    0,
                    error=CommandError("busy", "too many commands wait for a slot: retry later"),
                )
        refusal = self.gate.refusal(command)
        if refusal is not None:  # not run, not journalled: a valid re-send may run
            return CommandResult(command.command_id, False, 0, error=refusal)
        if self.journal is not None and not self.journal.start_command(command.command_id):
            log.info("command %s was started before: not running it again", command.command_id)
            return None
        self._running[command.command_id] = trio.CancelScope()
        self._waiting += 1 if waits else 0
        self._waiting_bytes += waits
        try:
            result = await self._run(command, waits)
        finally:
            del self._running[command.command_id]
            self._cancelled.discard(command.command_id)
        size = 256 + encoded_size(result.result)
        self._results[command.command_id] = (result, size)
        self._results_bytes += size
        while len(self._results) > REMEMBERED_RESULTS or self._results_bytes > REMEMBERED_BYTES:
            _, (_, dropped) = self._results.popitem(last=False)
            self._results_bytes -= dropped
        return result

    def _request_restart(self) -> None:
        self.restart_requested = True

    def cancel(self, command_id: str) -> bool:
        """Stop a running command (it answers ``cancelled``); False if it is not running."""
        scope = self._running.get(command_id)
        if scope is None:
            return False
        self._cancelled.add(command_id)
        scope.cancel()
        return True

    async def _run(self, command: Command, waits: int) -> CommandResult:
        """``waits``: what it was counted as among the waiting (0: not counted)."""
        started = time.monotonic()

        def failed(code: str, message: str) -> CommandResult:
            elapsed = int((time.monotonic() - started) * 1000)
            return CommandResult(
                command.command_id, False, elapsed, error=CommandError(code, message)
            )

        handler = self.handlers.get(command.command)
        timeout_s = command.timeout_ms / 1000
        sink = None
        if command.stream_output and self.output_sink is not None:
            sink = self.output_sink(command)
        context = CommandContext(self.settings, timeout_s, sink, restart=self._request_restart)
        scope = self._running[command.command_id]
        scope.deadline = trio.current_time() + timeout_s
        try:
            if handler is None:
                return failed("unknown_command", f"this agent has no command {command.command!r}")
            await self._limiter.acquire()
        finally:
            self._waiting -= 1 if waits else 0
            self._waiting_bytes -= waits
        try:
            with scope:
                try:
                    value = await handler(command.args, context)
                except CommandFailed as exc:
                    return failed(exc.code, exc.message)
                except Exception as exc:  # a plugin's bug must not take the agent down
                    log.warning("command %s failed: %r", command.command, exc)
                    return failed("handler_error", f"{type(exc).__name__}: {exc}")
        finally:
            self._limiter.release()
        if command.command_id in self._cancelled:
            return failed(CANCELLED, "cancelled by the server")
        if scope.cancelled_caught:
            return failed("timeout", f"stopped after {command.timeout_ms} ms")
        try:
            canonicalize({"result": value})
        except ValueError as exc:  # a plugin returned something no frame can carry
            return failed("handler_error", f"the result is not JSON the protocol signs: {exc}")
        elapsed = int((time.monotonic() - started) * 1000)
        return CommandResult(command.command_id, True, elapsed, result=value)
