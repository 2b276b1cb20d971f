"""The ``ack`` and ``cancel`` extensions (docs/protocol.md, "Extensions").

``ack``: an agent numbers what it keeps in its outbox (``delivery: {stream, seq}`` in the
payload of ``metrics``, ``log`` and ``command_result``); the server drops a number it has
already accepted and acknowledges, cumulatively, what it has durably stored. ``cancel``: the
server asks the agent to stop a command it sent.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any, Self

import attrs

from .payloads import NAME, Delivery, delivery_of, schema_error

__all__ = [
    "CANCELLED",
    "FEATURE_ACK",
    "FEATURE_CANCEL",
    "INTERRUPTED",
    "Cancel",
    "Delivery",
    "DeliveryLedger",
    "delivery_of",
]

FEATURE_ACK = "ack"
FEATURE_CANCEL = "cancel"
#: ``error.code`` of a command the agent stopped on a ``cancel``.
CANCELLED = "cancelled"
#: ``error.code`` of a command a restart of the agent cut off (it is never run again).
INTERRUPTED = "interrupted"


@attrs.frozen
class Cancel:
    """Server -> agent ``cancel``: stop command ``command_id`` (it answers ``cancelled``)."""

    command_id: str

    @classmethod
    def from_payload(cls, payload: Mapping[str, Any]) -> Self:
        command_id = payload.get("commandId")
        if not isinstance(command_id, str) or not NAME.fullmatch(command_id):
            raise schema_error("payload.commandId must be 1-128 chars of [A-Za-z0-9._:-]")
        return cls(command_id)

    def to_payload(self) -> dict[str, Any]:
        return {"commandId": self.command_id}


class DeliveryLedger:
    """Per agent, its current stream and the highest ``seq`` accepted from it.

    An agent sends its outbox in ``seq`` order, so anything at or below the mark is a
    re-send. Gaps are fine (an outbox that overflowed dropped its oldest). A new stream
    (a new outbox) replaces the old one.
    """

    __slots__ = ("_marks",)

    def __init__(self, marks: Mapping[str, Delivery] = {}) -> None:
        self._marks: dict[str, tuple[str, int]] = {
            agent_id: (mark.stream, mark.seq) for agent_id, mark in marks.items()
        }

    def __len__(self) -> int:
        return len(self._marks)

    def __iter__(self) -> Iterator[str]:
        return iter(self._marks)

    def admit(self, agent_id: str, delivery: Delivery) -> bool:
        """True (and the mark moves) when ``delivery`` is new; False for a re-send."""
        mark = self._marks.get(agent_id)
        if mark is not None and mark[0] == delivery.stream and delivery.seq <= mark[1]:
            return False
        self._marks[agent_id] = (delivery.stream, delivery.seq)
        return True

    def mark(self, agent_id: str) -> Delivery | None:
        mark = self._marks.get(agent_id)
        return None if mark is None else Delivery(*mark)
