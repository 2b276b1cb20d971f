"""One agent's WebSocket from accept to close: one nursery, a reader and a writer.

The reader runs in the connection's own task: it feeds frames to the sans-IO
``ServerSession`` and acts on the events; the session's deadline (auth, heartbeat
silence) is the cancel scope around each read, not a task. The writer drains a bounded
queue, so a slow agent first gets backpressure and then, when the queue overflows, a
1013 close. Every close goes through the writer, after the frames queued before it.
"""

from __future__ import annotations

import contextlib
import math
from typing import TYPE_CHECKING

import trio

from ..protocol import (
    Authenticated,
    CloseCode,
    CloseConnection,
    CommandResultReceived,
    DuplicateDropped,
    Event,
    LogsReceived,
    MetricsReceived,
    SendFrame,
    ServerSession,
)
from .clock import wall_ms
from .registry import AgentInfo

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable

    from .gateway import Gateway

__all__ = ["AgentConnection"]

#: How long queued frames and the close frame may take to leave after a close is decided.
CLOSE_GRACE_S = 2.0


class AgentConnection:
    """The I/O shell around one ``ServerSession``."""

    def __init__(
        self,
        gateway: Gateway,
        session: ServerSession,
        receive: ASGIReceiveCallable,
        send: ASGISendCallable,
        *,
        address: str,
        port: int,
    ) -> None:
        self._gateway = gateway
        self.session = session
        self._receive = receive
        self._send = send
        self.address = address
        self.remote = f"{address}:{port}"
        self.connected_at_ms = wall_ms()
        self._outbox_send, self._outbox = trio.open_memory_channel[str](
            gateway.config.outgoing_queue
        )
        self._read_scope: trio.CancelScope | None = None
        self._closing: CloseConnection | None = None
        self._peer_gone = False
        self._authenticated = False

    # -- what others call -----------------------------------------------------------------

    @property
    def closing(self) -> CloseConnection | None:
        """The close decided on this connection, if any."""
        return self._closing

    @property
    def agent_id(self) -> str:
        return self.session.agent_id or ""

    def info(self) -> AgentInfo:
        session = self.session
        hello = session.hello
        assert hello is not None  # noqa: S101 - only registered once authenticated
        return AgentInfo(
            agent_id=self.agent_id,
            session_id=session.session_id,
            hostname=hello.hostname,
            instance_id=hello.instance_id,
            agent_version=hello.agent_version,
            commands=hello.capabilities.commands,
            features=session.features,
            remote_address=self.remote,
            connected_at_ms=self.connected_at_ms,
            last_seen_ms=session.last_heard_ms,
            node=self._gateway.node,
        )

    def replace(self) -> None:
        self.close(self.session.close(CloseCode.REPLACED))

    def shutdown(self, retry_after_s: int) -> None:
        self.close(self.session.close(CloseCode.GOING_AWAY, retry_after_s))

    def send_frame(self, text: str) -> bool:
        """Queue a frame; False (and a 1013 close) when the agent is too slow to take it."""
        if self._closing is not None:
            return False
        try:
            self._outbox_send.send_nowait(text)
        except trio.WouldBlock:
            self.close(self.session.close(CloseCode.TRY_AGAIN_LATER, retry_after_s=1))
            return False
        return True

    def close(self, event: CloseConnection) -> None:
        """Decide to close: the writer sends what is queued, then the close frame."""
        if self._closing is not None:
            return
        self._closing = event
        self._gateway.log_close(self, event)
        self._outbox_send.close()
        if event.code is CloseCode.TRY_AGAIN_LATER:
            # The agent cannot keep up: what is still queued would only delay the close.
            with contextlib.suppress(trio.EndOfChannel):
                while True:
                    self._outbox.receive_nowait()
        if self._read_scope is not None:
            self._read_scope.cancel()
        self._gateway.commands.connection_lost(self)

    # -- the connection's life ------------------------------------------------------------

    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._write_loop)
                await self._read_loop()
                if self._closing is None:  # the peer left first
                    self._outbox_send.close()
                nursery.cancel_scope.deadline = trio.current_time() + CLOSE_GRACE_S
        finally:
            with trio.CancelScope(shield=True):
                await self._gateway.connection_ended(self, self._authenticated)

    async def _read_loop(self) -> None:
        session, receive = self.session, self._receive
        replay = self._gateway.replay
        while self._closing is None:
            deadline_ms = session.deadline_ms()
            deadline = trio.current_time() + ((deadline_ms or 0) - wall_ms()) / 1000
            with trio.CancelScope(deadline=deadline if deadline_ms else math.inf) as scope:
                self._read_scope = scope
                message = await receive()
            self._read_scope = None
            if scope.cancelled_caught:
                if self._closing is None:
                    await self._act(session.on_deadline(wall_ms()))
                continue
            kind = message["type"]
            if kind == "websocket.disconnect":
                self._peer_gone = True
                return
            if kind != "websocket.receive":
                continue
            text: str | None = message.get("text")  # type: ignore[assignment]
            data: str | bytes = text if text is not None else message.get("bytes") or b""  # type: ignore[assignment]
            await self._act(session.receive(data, wall_ms(), replay))

    async def _act(self, events: list[Event]) -> None:
        gateway = self._gateway
        for event in events:
            match event:
                case SendFrame(text=text):
                    self.send_frame(text)
                case MetricsReceived(envelope=envelope, metrics=metrics):
                    gateway.sink.metrics(envelope.agent_id, envelope.ts, metrics.values)
                case LogsReceived(envelope=envelope, batch=batch):
                    gateway.sink.logs(envelope.agent_id, batch.entries)
                case CommandResultReceived(result=result):
                    gateway.commands.resolve(self, result)
                case DuplicateDropped():
                    gateway.stats["duplicates"] += 1
                case Authenticated():
                    self._authenticated = True
                    await gateway.authenticated(self)
                case CloseConnection():
                    self.close(event)

    async def _write_loop(self) -> None:
        send = self._send
        async for text in self._outbox:
            await send({"type": "websocket.send", "text": text, "bytes": None})
        closing = self._closing
        if closing is not None and not self._peer_gone:
            await send({"type": "websocket.close", "code": closing.code, "reason": closing.reason})
