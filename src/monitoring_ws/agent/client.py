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
from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs
import trio
from trio_websocket import ConnectionClosed, HandshakeError, WebSocketConnection

from .. import __version__
from ..clock import wall_ms as now_ms
from ..protocol import (
    AgentSession,
    AuthAccepted,
    AuthHello,
    Capabilities,
    CloseConnection,
    Command,
    CommandReceived,
    Event,
    MessageType,
    SendFrame,
)
from .backoff import Backoff
from .dial import PinMismatchError, ProxyError, dial
from .logtail import LogTail
from .metrics import collect
from .runner import CommandRunner
from .settings import AgentSettings

__all__ = ["Agent", "Outbox"]

log = logging.getLogger("monitoring_ws.agent")
#: A connection that stayed up this long resets the backoff.
STABLE_AFTER_S = 30.0


@attrs.define
class Outbox:
    """Messages waiting to be signed and sent, bounded; the oldest go first."""

    limit: int
    items: deque[tuple[MessageType, Mapping[str, Any]]] = attrs.field(factory=deque)
    dropped: int = 0
    wake: trio.Event = attrs.field(factory=trio.Event)

    def put(self, kind: MessageType, payload: Mapping[str, Any]) -> None:
        if len(self.items) >= self.limit:
            self.items.popleft()
            self.dropped += 1
        self.items.append((kind, payload))
        self.wake.set()


@attrs.define
class _Link:
    """One connection's parts, shared by its tasks."""

    ws: WebSocketConnection
    session: AgentSession
    nursery: trio.Nursery
    closing: CloseConnection | None = None


class Agent:
    """Runs until cancelled, reconnecting for ever."""

    def __init__(self, settings: AgentSettings, runner: CommandRunner) -> None:
        self.settings = settings
        self.runner = runner
        self.outbox = Outbox(settings.buffer_messages)
        self.backoff = Backoff(settings.backoff_base_s, settings.backoff_cap_s)
        self.connected = trio.Event()  # set while a session is open (tests wait on it)
        self._reschedule = trio.Event()

    async def run(self) -> None:
        while True:
            code, reason = await self.connect_once()
            delay = self.backoff.next_delay(code, reason)
            log.info("disconnected (%s %s); reconnecting in %.1f s", code, reason, delay)
            await trio.sleep(delay)

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
                    with trio.move_on_after(2) as cleanup:
                        cleanup.shield = True
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
        if trio.current_time() - started >= STABLE_AFTER_S:
            self.backoff.stable()
        return code, reason

    async def _session(self, ws: WebSocketConnection) -> tuple[int | None, str]:
        hello = AuthHello(
            agent_version=__version__,
            hostname=socket.gethostname()[:256],
            capabilities=Capabilities(self.runner.commands),
            instance_id=self.settings.instance_id,
        )
        session = AgentSession(agent_id=self.settings.agent_id, key=self.settings.key, hello=hello)
        _take_server_clock(ws, session)
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
            case AuthAccepted():
                self.connected.set()
                self._reschedule.set()
                log.info("connected to %s as %s", self.settings.url, link.session.agent_id)
                link.nursery.start_soon(self._send_loop, link.ws, link.session)
                link.nursery.start_soon(self._metrics_loop)
                if self.settings.log_files:
                    link.nursery.start_soon(LogTail(self.settings, self.outbox).run)
            case CommandReceived(command=command):
                link.nursery.start_soon(self._answer, command)
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
        if result is None:
            return
        # Results go first: they are what someone is waiting for.
        self.outbox.items.appendleft((MessageType.COMMAND_RESULT, result.to_payload()))
        self.outbox.wake.set()

    async def _send_loop(self, ws: WebSocketConnection, session: AgentSession) -> None:
        outbox = self.outbox
        while True:
            while outbox.items:
                kind, payload = outbox.items[0]
                frame = session.message(kind, payload, now_ms())
                await ws.send_message(frame)
                outbox.items.popleft()  # only once sent: a broken send keeps it for later
            outbox.wake = trio.Event()
            await outbox.wake.wait()

    async def _metrics_loop(self) -> None:
        while True:
            self.outbox.put(MessageType.METRICS, await trio.to_thread.run_sync(collect))
            await trio.sleep(self.settings.metrics_interval_s)


def _close_of(closed: ConnectionClosed) -> tuple[int | None, str]:
    reason = closed.reason
    return (None, "") if reason is None else (reason.code, reason.reason or "")


def _first(group: BaseExceptionGroup[Any]) -> BaseException:
    leaf: BaseException = group
    while isinstance(leaf, BaseExceptionGroup):
        leaf = leaf.exceptions[0]
    return leaf


def _take_server_clock(ws: WebSocketConnection, session: AgentSession) -> None:
    """Set the clock offset from the upgrade response's Date header, when there is one."""
    for name, value in ws.handshake_headers:
        if name.lower() == b"date":
            try:
                server = email.utils.parsedate_to_datetime(value.decode("latin-1"))
            except (TypeError, ValueError):
                return
            server_ms = int(server.timestamp() * 1000)
            if abs(server_ms - now_ms()) > 2000:  # one-second resolution: only real skew
                session.adjust_clock(server_ms + 500, now_ms())
            return
