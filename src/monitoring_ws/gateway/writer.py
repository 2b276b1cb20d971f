"""The sending half of an agent's connection: a bounded queue of frames and a writer task
that exists only while frames are queued (each task costs several KB, and idle agents are
most of a fleet). Every close goes through the writer, after the frames queued before it."""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import trio

if TYPE_CHECKING:
    from hypercorn.typing import ASGISendCallable

    from ..protocol import CloseConnection

__all__ = ["DirectSocket", "FrameWriter"]


class DirectSocket(Protocol):
    """A socket that can write a frame from the caller's task (the lean listener's)."""

    def send_text_now(self, text: str) -> bool | None:
        """True: written; None: written in part (``flush`` sends the rest); False: not now."""

    async def flush(self) -> None:
        """Send the rest of a frame ``send_text_now`` wrote in part."""


class FrameWriter:
    """Queues frames for one socket; ``AgentConnection`` decides what a full queue means."""

    __slots__ = (
        "_backlogged",
        "_closing",
        "_direct",
        "_drained",
        "_nursery",
        "_outbox",
        "_send",
        "_writing",
    )

    def __init__(self, send: ASGISendCallable) -> None:
        self._send = send
        # The lean listener's socket writes a frame from the caller's task when it can
        # (a writer task per command frame cost more than the write); Hypercorn's cannot.
        # (The socket is kept, not its bound methods: two objects more for every idle agent.)
        socket = getattr(send, "__self__", None)
        self._direct: DirectSocket | None = socket if hasattr(socket, "send_text_now") else None
        #: The socket holds the rest of a frame written at once: the writer flushes it first.
        self._backlogged = False
        self._outbox: list[str | bytes] = []  # a deque costs ~700 B; this stays short
        self._writing = False
        #: The connection's nursery while it runs (the writer is started in it).
        self._nursery: trio.Nursery | None = None
        #: The close decided, sent once the queue before it has left.
        self._closing: CloseConnection | None = None
        #: Set when the queue drains below half: channel data waits on it.
        self._drained: trio.Event | None = None

    def _queue_limit(self) -> int:
        """The most frames queued (``outgoing_queue``)."""
        raise NotImplementedError

    def _overflowed(self) -> None:
        """The agent cannot keep up: the queue is full."""
        raise NotImplementedError

    def send_frame(self, text: str) -> bool:
        """Queue a frame; False (and a 1013 close) when the agent is too slow to take it."""
        if self._closing is not None:
            return False
        if len(self._outbox) >= self._queue_limit():
            # What is still queued would only delay the close: the agent cannot keep up.
            self._outbox.clear()
            self._overflowed()
            return False
        if (
            self._direct is not None
            and not self._outbox
            and not self._writing
            and not self._backlogged
            and self._nursery is not None
        ):
            written = self._direct.send_text_now(text)
            if written:
                return True
            if written is None:  # partly written: the writer sends the rest
                self._backlogged = True
                self._wake_writer()
                return True
        self._outbox.append(text)
        self._wake_writer()
        return True

    async def send_binary(self, frame: bytes) -> bool:
        """Queue a binary frame once the queue is under half full (bulk data waits here
        rather than overflow the queue, which closes the connection); False if closing."""
        half = max(1, self._queue_limit() // 2)
        while len(self._outbox) >= half and self._closing is None:
            if self._drained is None:
                self._drained = trio.Event()
            await self._drained.wait()
        if self._closing is not None:
            return False
        self._outbox.append(frame)
        self._wake_writer()
        return True

    def _signal_drained(self) -> None:
        if self._drained is not None:
            self._drained.set()
            self._drained = None

    def _wake_writer(self) -> None:
        if (
            not self._writing
            and self._nursery is not None
            and (self._outbox or self._closing or self._backlogged)
        ):
            self._writing = True
            self._nursery.start_soon(self._write)

    async def _write(self) -> None:
        send, outbox = self._send, self._outbox
        try:
            if self._backlogged and self._direct is not None:
                self._backlogged = False
                await self._direct.flush()
            half = self._queue_limit() // 2
            while outbox:
                frame = outbox.pop(0)
                if isinstance(frame, str):
                    await send({"type": "websocket.send", "text": frame, "bytes": None})
                else:
                    await send({"type": "websocket.send", "text": None, "bytes": frame})
                if self._drained is not None and len(outbox) < half:
                    self._signal_drained()
            closing = self._closing
            if closing is not None:
                # After the peer has gone Hypercorn ignores this, as it should.
                await send(
                    {"type": "websocket.close", "code": closing.code, "reason": closing.reason}
                )
        finally:
            self._writing = False
        if outbox and self._closing is None:  # queued while the last send was finishing
            self._wake_writer()
