"""A running command's output, sent as it happens (the ``output`` extension).

Each chunk goes into the outbox as a numbered ``command_output`` message, so it survives a
reconnect (and the agent's restart) until the server acknowledges it. Two things hold the
command back instead of dropping its output: the server's output budget
(``outputBytesPerS`` in the auth reply, paced here so the server never has to refuse), and
the output still unacknowledged in the outbox (at most ``backlog`` bytes). A command that
writes faster than that waits on its pipe, as it would behind a slow terminal.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import trio

from ..clock import wall_ms
from ..protocol import MessageType, WorkBudget
from ..protocol.output import STREAMS, CommandOutput, OutputDecoder

if TYPE_CHECKING:
    from .outbox import Outbox

__all__ = ["OUTPUT_BACKLOG_BYTES", "OutputPacer", "OutputSink"]

#: Output not yet acknowledged that a command may have in the outbox before it waits:
#: above what one ack interval carries at the fastest budget worth having.
OUTPUT_BACKLOG_BYTES = 8 << 20
#: What a chunk's frame costs beyond its data (the envelope, its members, the signature).
_FRAME_OVERHEAD = 320


class OutputPacer:
    """The agent's share of the server's output budget, shared by every command of the
    agent: the protocol's ``WorkBudget`` counted in bytes, one second of them at once
    (the server allows more). A chunk is charged as it goes; the next waits off the debt."""

    def __init__(self) -> None:
        #: None: the server announced no budget (not paced).
        self._budget: WorkBudget | None = None

    def set_rate(self, bytes_per_s: int | None) -> None:
        self._budget = (
            None if bytes_per_s is None else WorkBudget(bytes_per_s, bytes_per_s, wall_ms())
        )

    async def take(self, size: int) -> None:
        """Charge ``size`` bytes; wait while the budget is in debt."""
        if self._budget is not None:
            wait = self._budget.charge(size, wall_ms())
            if wait > 0:
                await trio.sleep(wait)


class OutputSink:
    """One command's output: bytes of each stream in, ``command_output`` messages out."""

    def __init__(
        self,
        command_id: str,
        outbox: Outbox,
        pacer: OutputPacer,
        *,
        chunk_bytes: int,
        backlog_bytes: int = OUTPUT_BACKLOG_BYTES,
    ) -> None:
        self.command_id = command_id
        self._outbox = outbox
        self._pacer = pacer
        self._chunk_bytes = chunk_bytes
        self._backlog = backlog_bytes
        self._decoders = {stream: OutputDecoder(stream) for stream in STREAMS}
        #: The last chunk's number (chunks are numbered from 1, both streams together).
        self.seq = 0

    @property
    def totals(self) -> dict[str, int]:
        """Bytes of each stream sent so far: ``{"stdoutBytes": .., "stderrBytes": ..}``."""
        return {f"{name}Bytes": decoder.offset for name, decoder in self._decoders.items()}

    async def write(self, stream: str, data: bytes, *, final: bool = False) -> None:
        """Send what the command wrote to ``stream`` (``final``: it closed the stream)."""
        decoder = self._decoders[stream]
        step = self._chunk_bytes
        pieces = [data[i : i + step] for i in range(0, len(data), step)] or [b""]
        for index, piece in enumerate(pieces):
            last = final and index == len(pieces) - 1
            for offset, text, binary in decoder.feed(piece, final=last):
                await self._room(len(text))
                self.seq += 1
                chunk = CommandOutput(self.command_id, stream, self.seq, offset, text, binary)
                self._outbox.put(MessageType.COMMAND_OUTPUT, chunk.to_payload())

    async def _room(self, size: int) -> None:
        outbox = self._outbox
        while outbox.output_bytes > self._backlog:
            await outbox.forgotten_event().wait()
        await self._pacer.take(size + _FRAME_OVERHEAD)
