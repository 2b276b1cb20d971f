"""Agents' labels as the host knows them: those the operator set (``PATCH
/api/agents/:id/labels``) and the last ones each agent reported, so that an agent that is
offline keeps its labels for selectors. One SQLite file beside the other state; read from
memory (every label of every agent is a few KB per thousand agents)."""

from __future__ import annotations

import json
import threading
from collections.abc import Mapping
from pathlib import Path

import trio

from ..private import private_sqlite
from ..protocol.labels import MAX_LABELS, LabelError, check_labels

__all__ = ["AgentLabels", "LabelStore"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS labels (
    agent_id TEXT NOT NULL,
    source TEXT NOT NULL,
    labels TEXT NOT NULL,
    PRIMARY KEY (agent_id, source)
);
"""
AgentLabels = dict[str, str]
#: Agents that may hold operator labels: what ``PATCH`` can make the store keep.
MAX_LABELLED_AGENTS = 100_000
_NONE: Mapping[str, str] = {}


class LabelStore:
    """Operator and reported labels per agent; ``path`` None keeps them in memory."""

    def __init__(self, path: Path | None) -> None:
        self._db = private_sqlite(path, _SCHEMA)
        self._lock = threading.Lock()
        #: One change at a time: each reads what the last one wrote.
        self._changing = trio.Lock()
        self._operator: dict[str, AgentLabels] = {}
        self._reported: dict[str, AgentLabels] = {}
        for agent_id, source, text in self._db.execute("SELECT * FROM labels"):
            kept = self._operator if source == "operator" else self._reported
            try:
                kept[agent_id] = check_labels(json.loads(text))
            except (ValueError, LabelError):  # a rule that tightened: the row is dropped
                continue

    def operator(self, agent_id: str) -> AgentLabels:
        return dict(self._operator.get(agent_id, {}))

    def reported(self, agent_id: str) -> AgentLabels:
        return dict(self._reported.get(agent_id, {}))

    def effective(self, agent_id: str) -> Mapping[str, str]:
        """What selectors match: the agent's own, with the operator's over them (read
        only: it may be the store's own map)."""
        own = self._reported.get(agent_id, _NONE)
        operator = self._operator.get(agent_id)
        return own if operator is None else {**own, **operator}

    async def change(self, agent_id: str, changes: Mapping[str, str | None]) -> AgentLabels:
        """Set (a string) or remove (None) operator labels; the agent's operator labels
        after. Raises ``LabelError`` (nothing changed) when the result breaks a rule."""
        async with self._changing:
            return await self._change(agent_id, changes)

    async def _change(self, agent_id: str, changes: Mapping[str, str | None]) -> AgentLabels:
        merged = self.operator(agent_id)
        for key, value in changes.items():
            if value is None:
                merged.pop(key, None)
            else:
                merged[key] = value
        if len(merged) > MAX_LABELS:
            raise LabelError(f"an agent holds at most {MAX_LABELS} operator labels")
        if agent_id not in self._operator and len(self._operator) >= MAX_LABELLED_AGENTS:
            raise LabelError(
                f"operator labels are kept for at most {MAX_LABELLED_AGENTS} agents: remove "
                "some first"
            )
        merged = check_labels(merged)
        await self._write([(agent_id, "operator", merged)])
        if merged:
            self._operator[agent_id] = merged
        else:
            self._operator.pop(agent_id, None)
        return dict(merged)

    async def saw(self, reports: Mapping[str, Mapping[str, str]]) -> None:
        """Agents reported these labels: those that changed are kept, in one write."""
        changed = {
            agent_id: dict(labels)
            for agent_id, labels in reports.items()
            if self._reported.get(agent_id, {}) != labels
        }
        if not changed:
            return
        for agent_id, labels in changed.items():
            if labels:
                self._reported[agent_id] = labels
            else:
                self._reported.pop(agent_id, None)
        await self._write([(agent_id, "reported", labels) for agent_id, labels in changed.items()])

    async def _write(self, rows: list[tuple[str, str, AgentLabels]]) -> None:
        def write() -> None:
            with self._lock:
                self._db.execute("BEGIN")
                try:
                    for agent_id, source, labels in rows:
                        if labels:
                            self._db.execute(
                                "INSERT OR REPLACE INTO labels VALUES (?, ?, ?)",
                                (agent_id, source, json.dumps(labels, sort_keys=True)),
                            )
                        else:
                            self._db.execute(
                                "DELETE FROM labels WHERE agent_id = ? AND source = ?",
                                (agent_id, source),
                            )
                except BaseException:
                    self._db.execute("ROLLBACK")
                    raise
                self._db.execute("COMMIT")

        await trio.to_thread.run_sync(write)

    def close(self) -> None:
        with self._lock:
            self._db.close()
