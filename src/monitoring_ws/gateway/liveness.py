"""What a dashboard shows of agents beside the registry: which connected agents went quiet
(stale), and each agent's recent sessions. Plain bookkeeping; the gateway drives it."""

from __future__ import annotations

from collections import deque
from collections.abc import Mapping
from typing import Any

import attrs

__all__ = ["ConnectionHistory", "SessionSpan", "Staleness"]


class Staleness:
    """Connected agents silent for ``after_ms`` (two heartbeat intervals by default; the
    session closes them at three). A scan every so often says who turned stale and who
    spoke again; agents that left are forgotten silently (their disconnect says it)."""

    def __init__(self, after_ms: int) -> None:
        self.after_ms = after_ms
        self.stale: set[str] = set()

    def scan(self, now_ms: int, heard: Mapping[str, int]) -> tuple[list[str], list[str]]:
        """``heard``: each connected agent's last verified message (ms). Returns the agents
        that turned stale and those that are live again since the last scan."""
        cutoff = now_ms - self.after_ms
        quiet = {agent_id for agent_id, ms in heard.items() if ms <= cutoff}
        turned = sorted(quiet - self.stale)
        back = sorted(agent_id for agent_id in self.stale - quiet if agent_id in heard)
        self.stale = quiet
        return turned, back

    def forget(self, agent_id: str) -> None:
        """The agent left: a new session of it starts live."""
        self.stale.discard(agent_id)


@attrs.frozen
class SessionSpan:
    """One authenticated session of an agent on this node."""

    session_id: str
    address: str
    node: str
    connected_ms: int
    disconnected_ms: int | None = None
    close_code: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "sessionId": self.session_id,
            "address": self.address,
            "node": self.node,
            "connectedAt": self.connected_ms,
            "disconnectedAt": self.disconnected_ms,
            "closeCode": self.close_code,
        }


class ConnectionHistory:
    """The last ``keep`` sessions of each agent that authenticated here (since start), so
    it grows with the fleet only."""

    def __init__(self, keep: int = 20) -> None:
        self.keep = keep
        self._spans: dict[str, deque[SessionSpan]] = {}

    def opened(self, agent_id: str, span: SessionSpan) -> None:
        spans = self._spans.get(agent_id)
        if spans is None:
            spans = self._spans[agent_id] = deque(maxlen=self.keep)
        spans.append(span)

    def closed(self, agent_id: str, session_id: str, at_ms: int, code: int | None) -> None:
        for index, span in enumerate(self._spans.get(agent_id, ())):
            if span.session_id == session_id:
                ended = attrs.evolve(span, disconnected_ms=at_ms, close_code=code)
                self._spans[agent_id][index] = ended
                return

    def of(self, agent_id: str) -> list[dict[str, Any]]:
        """Newest first."""
        return [span.to_json() for span in reversed(self._spans.get(agent_id, ()))]
