"""The agent's connection loop: connect, authenticate, stream, answer; reconnect.

Each connection is one nursery: the reader (frames in, commands out to the runner), the
ticker (heartbeats and the silence deadline of the sans-IO ``AgentSession``), the sender
(signs queued messages at send time) and the producers (metrics, log tails). One ends,
all are cancelled; the loop waits as ``Backoff`` says and dials again.
"""

from __future__ import annotations

import email.utils
import logging
import math
import socket
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from .. import __version__
from ..clock import wall_ms as now_ms
from ..protocol import (
    DEFAULT_MAX_FRAME_BYTES,
    DEFAULT_MAX_FRAME_VALUES,
    FEATURE_ACK,
    FEATURE_CANCEL,
    FEATURE_CHANNELS,
    FEATURE_INTENTS,
    FEATURE_LABELS,
    FEATURE_OUTPUT,
    INTERRUPTED,
    AckReceived,
    AgentSession,
    AuthAccepted,
    AuthHello,
    CancelReceived,
    Capabilities,
    ChannelControlReceived,
    ChannelDataReceived,
    CloseCode,
    CloseConnection,
    Command,
    CommandError,
    CommandReceived,
    CommandResult,
    Event,
    LogEntry,
    MessageType,
    ProtocolError,
    SendFrame,
    encoded_size,
    fit_payload,
    value_count,
    values_over,
)
from ..protocol.output import chunk_bytes_for
from ..protocol.payloads import MIN_FRAME_LIMIT
from .backoff import Backoff
from .channels import AgentChannels
from .dial import PinMismatchError, ProxyError, dial
from .logtail import LogTail
from .metrics import collect
from .outbox import Outbox
from .output import OutputPacer, OutputSink
from .runner import CommandRunner
from .settings import AgentSettings

__all__ = ["Agent"]

log = logging.getLogger("monitoring_ws.agent")
#: A connection that stayed up this long resets the backoff.
STABLE_AFTER_S = 30.0
#: How long a closing connection waits for the server's close reply, and (when the agent is
#: stopping, its reader already cancelled) for its own close frame to be written.
CLOSE_REPLY_S = 2.0
CLOSE_SENT_S = 0.1


@attrs.define
class _Link:
    """One connection's parts, shared by its tasks."""

    ws: WebSocketConnection
    session: AgentSession
    nursery: trio.Nursery
    closing: CloseConnection | None = None
    #: With ``channels`` negotiated: this connection's shells and tunnels.
    channels: AgentChannels | None = None


class Agent:
    """Runs until cancelled, reconnecting for ever."""

    def __init__(self, settings: AgentSettings, runner: CommandRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.outbox = Outbox(
            settings.outbox_path,
            max_bytes=settings.outbox_max_bytes,
            max_age_s=settings.outbox_max_age_s,
        )
        runner.journal = self.outbox
        runner.gate.nonces = self.outbox
        runner.output_sink = self._output_sink
        #: The server's output budget, shared by every command (set at each auth).
        self.output_pacer = OutputPacer()
        #: The chunk size that fits the server's frame limit (set at each auth).
        self._chunk_bytes = chunk_bytes_for(DEFAULT_MAX_FRAME_BYTES)
        for command_id in self.outbox.interrupted_commands():
            # Started by a previous run that died: say so; it is never run again.
            log.warning(
                "command %s was interrupted by a restart of the agent",
                command_id,
                extra={"command_id": command_id, "agent_id": self.settings.agent_id},
            )
            error = CommandError(INTERRUPTED, "the agent restarted while running it")
            result = CommandResult(command_id, False, 0, error=error)
            self.outbox.put(MessageType.COMMAND_RESULT, result.to_payload())
        #: Outbox messages the server closed 1009 on, by seq: refused twice, replaced.
        self._refused: dict[int, int] = {}
        #: Lowered after a 1009 below what the server announced (a proxy may cut lower).
        self._frame_cap: int | None = None
        #: This connection's largest frame still unacknowledged: what a 1009 is blamed on.
        self._largest: tuple[int, int] = (0, 0)
        self.backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
        self.connected = trio.Event()  # set while a session is open (tests wait on it)
        #: Outlives connections: collectors and commands (a command cut off by a dropped
        #: connection finishes, and its result waits in the outbox).
        self._work: trio.Nursery | None = None
        self._reschedule = trio.Event()
        #: Set when the agent is to stop and start again through its launcher (update).
        self.restarting = trio.Event()

    async def run(self) -> None:
        """Collect and run commands for the agent's whole life; connect whenever possible."""
        async with trio.open_nursery() as work:
            self._work = work
            work.start_soon(self._metrics_loop)
            if self.settings.log_files:
                work.start_soon(LogTail(self.settings, self.outbox).run)
            try:
                while True:
                    code, reason = await self.connect_once()
                    delay = self.backoff.next_delay(code, reason)
                    log.info("disconnected (%s %s); reconnecting in %.1f s", code, reason, delay)
                    await trio.sleep(delay)
            finally:
                self._work = None

    async def connect_once(self) -> tuple[int | None, str]:
        """One connection, from dialing to close: the close code and reason."""
        started = trio.current_time()
        settings = self.settings
        try:
            async with trio.open_nursery() as nursery:
                with trio.fail_after(settings.connect_timeout_s):
                    ws = await dial(nursery, settings.url, pin_sha256=settings.cert_sha256)
                try:
                    code, reason = await self._session(ws)
                finally:
                    # Cancelled (the agent is stopping), the reader that would see the
                    # server's close reply is cancelled too: send ours and go.
                    stopping = trio.current_effective_deadline() == -math.inf
                    with trio.move_on_after(CLOSE_SENT_S if stopping else CLOSE_REPLY_S) as done:
                        done.shield = True
                        await ws.aclose()
        except* ConnectionClosed as group:
            leaf = _first(group)
            assert isinstance(leaf, ConnectionClosed)  # noqa: S101 - the group's only type
            code, reason = _close_of(leaf)
        except* (
            OSError,
            trio.BrokenResourceError,  # TLS failures surface as this
            HandshakeError,
            trio.TooSlowError,
            PinMismatchError,
            ProxyError,
        ) as group:
            error = _first(group)
            log.warning("cannot connect to %s: %s", settings.url, error)
            code, reason = None, str(error)
        finally:
            self.connected = trio.Event()
        if code == CloseCode.MESSAGE_TOO_BIG:
            self._refused_frame()
        if trio.current_time() - started >= STABLE_AFTER_S:
            self.backoff.stable()
        return code, reason

    async def _session(self, ws: WebSocketConnection) -> tuple[int | None, str]:
        labels = self.settings.labels
        # Offered only with labels to send: an unlabelled agent's auth stays as it was.
        features = (
            FEATURE_ACK,
            FEATURE_CANCEL,
            FEATURE_OUTPUT,
            FEATURE_CHANNELS,  # offered always: the agent itself refuses what is off
            FEATURE_INTENTS,  # operator-signed commands: checked when operatorKeys are set
            *((FEATURE_LABELS,) if labels else ()),
        )
        hello = AuthHello(
            agent_version=__version__,
            hostname=socket.gethostname()[:256],
            capabilities=Capabilities(self.runner.commands, features),
            instance_id=self.settings.instance_id,
            labels=labels or None,
        )
        session = AgentSession(agent_id=self.settings.agent_id, key=self.settings.key, hello=hello)
        _take_server_clock(ws, session, tls=self.settings.url.startswith("wss://"))
        await ws.send_message(session.start(now_ms()))
        closed_by_server: tuple[int | None, str] | None = None
        link: _Link | None = None
        try:
            async with trio.open_nursery() as nursery:
                link = _Link(ws, session, nursery)
                nursery.start_soon(self._read, link)
                nursery.start_soon(self._tick, link)
        except* ConnectionClosed as group:
            leaf = _first(group)
            assert isinstance(leaf, ConnectionClosed)  # noqa: S101 - the group's only type
            closed_by_server = _close_of(leaf)
        if closed_by_server is not None:
            return closed_by_server
        if link is not None and link.closing is not None:
            close = link.closing
            await ws.aclose(int(close.code), close.reason)
            return int(close.code), close.detail
        return None, "ended"

    async def _read(self, link: _Link) -> None:
        while link.closing is None:
            for event in link.session.receive(await link.ws.get_message(), now_ms()):
                await self._act(link, event)

    async def _act(self, link: _Link, event: Event) -> None:
        match event:
            case AuthAccepted(reply=reply):
                self.output_pacer.set_rate(reply.output_bytes_per_s)
                limit = min(
                    reply.max_frame_bytes or DEFAULT_MAX_FRAME_BYTES, self._frame_cap or 1 << 62
                )
                self._chunk_bytes = chunk_bytes_for(limit)
                self.connected.set()
                self._reschedule.set()
                log.info(
                    "connected to %s as %s",
                    self.settings.url,
                    link.session.agent_id,
                    extra={"agent_id": link.session.agent_id},
                )
                link.nursery.start_soon(self._send_loop, link.ws, link.session)
                if link.session.speaks_channels:
                    link.channels = AgentChannels(
                        link.session,
                        link.ws.send_message,
                        link.nursery,
                        sessions=self.settings.sessions,
                        tunnels=self.settings.tunnels,
                        gate=self.runner.gate,
                    )
            case CommandReceived(command=command):
                (self._work or link.nursery).start_soon(self._answer, command)
            case AckReceived(ack=ack):
                self.outbox.acknowledged(ack)
            case CancelReceived(command_id=command_id):
                self.runner.cancel(command_id)
            case ChannelControlReceived() | ChannelDataReceived() if link.channels is not None:
                try:
                    await link.channels.on_event(event)
                except ProtocolError as error:  # e.g. data for a channel never opened
                    await self._act(link, link.session.fail(error))
            case SendFrame(text=text):
                await link.ws.send_message(text)
            case CloseConnection():
                log.warning("closing: %s", event.detail or event.reason)
                link.closing = event
                link.nursery.cancel_scope.cancel()

    async def _tick(self, link: _Link) -> None:
        while link.closing is None:
            deadline_ms = link.session.deadline_ms()
            wake_at = math.inf
            if deadline_ms is not None:
                wake_at = trio.current_time() + (deadline_ms - now_ms()) / 1000
            with trio.move_on_at(wake_at):
                await self._reschedule.wait()  # the session's deadlines changed (auth)
            self._reschedule = trio.Event()
            for event in link.session.on_deadline(now_ms()):
                await self._act(link, event)

    async def _answer(self, command: Command) -> None:
        result = await self.runner.execute(command)
        if result is not None:
            self.outbox.put(MessageType.COMMAND_RESULT, result.to_payload())
            self.outbox.finish_command(command.command_id)
        if self.runner.restart_requested:  # the answer is kept: main.py restarts the agent
            self.restarting.set()

    async def _send_loop(self, ws: WebSocketConnection, session: AgentSession) -> None:
        """Send the outbox in order. With ``ack`` everything unacknowledged is sent again on
        each connection, numbered and signed afresh; without it, a message sent is gone."""
        outbox = self.outbox
        reply = session.reply
        numbered = reply is not None and FEATURE_ACK in reply.features
        limit = (reply and reply.max_frame_bytes) or DEFAULT_MAX_FRAME_BYTES
        limit = min(limit, self._frame_cap or limit)
        self._largest = (0, 0)
        sent_through = 0
        while True:
            outbox.wake = trio.Event()
            batch = outbox.after(sent_through)
            if not batch:
                await outbox.wake.wait()
                continue
            for seq, kind, payload in batch:
                if numbered:
                    payload["delivery"] = outbox.delivery(seq).to_payload()
                frame = self._frame(session, seq, kind, payload, limit)
                await ws.send_message(frame)
                if len(frame) > self._largest[1] or self._largest[0] <= outbox.acked_through:
                    self._largest = (seq, len(frame))
                sent_through = seq
                if not numbered:
                    outbox.forget_through(seq)

    def _frame(
        self,
        session: AgentSession,
        seq: int,
        kind: MessageType,
        payload: dict[str, Any],
        limit: int,
    ) -> str:
        """The signed frame for outbox message ``seq``, trimmed to fit ``limit``; a message
        that cannot be signed, or that the server refused twice, is replaced in the outbox by
        a small error record (so it can never block the messages behind it)."""
        problem = "the server refused it twice (1009)" if self._refused.get(seq, 0) >= 2 else ""
        if not problem:
            try:
                frame = session.message(kind, payload, now_ms())
                # n characters are at most 4n bytes: most frames fit without encoding.
                if len(frame) * 4 <= limit and _few_values(frame):
                    return frame
                size = len(frame.encode())
                for share in (8, 4, 1):  # eighths of the limit
                    if size <= limit and _few_values(frame):
                        return frame
                    budget = limit * share // 8
                    values = value_count(frame)
                    if values > DEFAULT_MAX_FRAME_VALUES:  # bytes in proportion to values
                        budget = min(budget, size * DEFAULT_MAX_FRAME_VALUES // values * 7 // 8)
                    payload = fit_payload(kind, payload, budget - (size - encoded_size(payload)))
                    frame = session.message(kind, payload, now_ms())
                    size = len(frame.encode())
                if size <= limit and _few_values(frame):
                    return frame
                problem = f"it does not fit in {limit} bytes even trimmed"
            except ValueError as exc:
                problem = f"it cannot be signed: {exc}"
        log.warning("outbox message %d (%s) replaced: %s", seq, kind.value, problem)
        kind, record = _error_record(kind, payload, problem)
        self.outbox.replace(seq, kind, record)
        if "delivery" in payload:
            record["delivery"] = payload["delivery"]
        self._refused.pop(seq, None)
        return session.message(kind, record, now_ms())

    def _refused_frame(self) -> None:
        """The server closed 1009: blame this connection's largest unacknowledged frame,
        and send nothing that large again."""
        seq, size = self._largest
        if seq == 0 or seq <= self.outbox.acked_through:
            return
        self._refused[seq] = self._refused.get(seq, 0) + 1
        self._frame_cap = max(MIN_FRAME_LIMIT, min(self._frame_cap or size, size - 1))
        log.warning("the server refused a frame of %d bytes (1009): sending less", size)

    def _output_sink(self, command: Command) -> OutputSink:
        return OutputSink(
            command.command_id, self.outbox, self.output_pacer, chunk_bytes=self._chunk_bytes
        )

    async def _metrics_loop(self) -> None:
        while True:
            self.outbox.put(MessageType.METRICS, await trio.to_thread.run_sync(collect))
            await trio.sleep(self.settings.metrics_interval_s)


def _few_values(frame: str) -> bool:
    """Whether the server will read ``frame``'s JSON values (it counts them first)."""
    return not values_over(frame, DEFAULT_MAX_FRAME_VALUES)


def _close_of(closed: ConnectionClosed) -> tuple[int | None, str]:
    reason = closed.reason
    return (None, "") if reason is None else (reason.code, reason.reason or "")


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _take_server_clock(ws: WebSocketConnection, session: AgentSession, *, tls: bool) -> None:
    """Set the clock offset from the upgrade response's Date header, when there is one:
    over TLS for everything, over plain ``ws://`` for the ``auth`` frame's ``ts`` only."""
    for name, value in ws.handshake_headers:
        if name.lower() == b"date":
            try:
                server = email.utils.parsedate_to_datetime(value.decode("latin-1"))
            except (TypeError, ValueError):
                return
            server_ms = int(server.timestamp() * 1000)
            if abs(server_ms - now_ms()) > 2000:  # one-second resolution: only real skew
                session.adjust_clock(server_ms + 500, now_ms(), authenticated=tls)
            return


def _error_record(
    kind: MessageType, payload: dict[str, Any], problem: str
) -> tuple[MessageType, dict[str, Any]]:
    """What stands in for an undeliverable message: its command's failure, or a log line."""
    if kind is MessageType.COMMAND_RESULT and isinstance(payload.get("commandId"), str):
        duration = payload.get("durationMs")
        error = CommandError("result_undeliverable", f"the result was dropped: {problem}")
        result = CommandResult(
            payload["commandId"], False, duration if isinstance(duration, int) else 0, error=error
        )
        return kind, result.to_payload()
    message = f"a {kind.value} message was dropped by the agent: {problem}"
    entry = LogEntry(now_ms(), "error", message, "monitoring-ws-agent")
    return MessageType.LOG, {"entries": [entry.to_payload()]}
