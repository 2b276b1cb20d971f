"""The fleet as the host sees it: every agent any transport lists, once, with its labels;
and which of them a selector means."""

from __future__ import annotations

from typing import Any

from ..transports import AgentListing, ListsAgents
from .labels import LabelStore
from .router import TransportRouter
from .selectors import Selector

__all__ = ["Fleet"]


class Fleet:
    """Listings of every transport merged per agent, labelled."""

    def __init__(self, router: TransportRouter, labels: LabelStore) -> None:
        self.router, self.labels = router, labels

    async def agents(self) -> list[dict[str, Any]]:
        """Every agent, sorted by id: connected, last seen, each transport's view, labels
        (``labels``: what selectors match; ``agentLabels``: its own, last reported;
        ``operatorLabels``: set through the API)."""
        return [self.labelled(entry) for entry in await self._merged()]

    async def _merged(self, *, details: bool = True) -> list[dict[str, Any]]:
        merged: dict[str, dict[str, Any]] = {}
        reported: dict[str, dict[str, str]] = {}
        for transport in self.router.transports:
            if not isinstance(transport, ListsAgents):
                continue
            for listing in await transport.list_agents():
                entry = merged.get(listing.agent_id)
                if entry is None:
                    entry = {"agentId": listing.agent_id, "connected": False, "lastSeen": None}
                    merged[listing.agent_id] = entry
                merge_listing(entry, transport.name, listing, details=details)
                if listing.labels is not None:
                    reported.setdefault(listing.agent_id, {}).update(listing.labels)
        await self.labels.saw(reported)
        return [merged[agent_id] for agent_id in sorted(merged)]

    def labelled(self, entry: dict[str, Any]) -> dict[str, Any]:
        """``entry`` with its three label maps."""
        agent_id = entry["agentId"]
        entry["labels"] = dict(self.labels.effective(agent_id))
        entry["agentLabels"] = self.labels.reported(agent_id)
        entry["operatorLabels"] = self.labels.operator(agent_id)
        return entry

    async def select(self, selector: Selector, *, full: bool = True) -> list[dict[str, Any]]:
        """The agents ``selector`` means, sorted by id: as ``agents`` lists them, or (not
        ``full``, what a job needs) only ``agentId``, ``connected``, ``lastSeen`` and
        ``transports``."""
        effective = self.labels.effective
        chosen = [
            entry
            for entry in await self._merged(details=full)
            if selector.matches(entry["agentId"], effective(entry["agentId"]), entry["transports"])
        ]
        return [self.labelled(entry) for entry in chosen] if full else chosen


def merge_listing(
    entry: dict[str, Any], transport: str, listing: AgentListing, *, details: bool = True
) -> None:
    """Add one transport's view of an agent to its entry (``details``: with what the
    transport says of it)."""
    entry["connected"] = entry["connected"] or listing.connected
    seen = listing.last_seen_ms
    if seen is not None and (entry["lastSeen"] is None or seen > entry["lastSeen"]):
        entry["lastSeen"] = seen
    entry.setdefault("transports", {})[transport] = listing.connected
    if not details:
        return
    entry.setdefault("details", {})[transport] = {
        "connected": listing.connected,
        "lastSeen": listing.last_seen_ms,
        **listing.details,
    }
