"""What each agent's frames cost the server to read and verify, and the wait that keeps
one agent to its share (``agent_cpu_ms_per_s``; docs/security.md, "Work per frame")."""

from __future__ import annotations

from collections import OrderedDict

from ..protocol import WorkBudget

__all__ = ["Workload"]

#: Agents whose budgets are remembered (the longest idle go first): a budget outlives
#: the connection, so reconnecting does not refill it.
MAX_TRACKED = 65_536


class Workload:
    """Per agent id, the time its frames took; ``charge`` says how long to stop reading."""

    def __init__(self, per_s: float, burst_s: float) -> None:
        self.per_s, self.burst_s = per_s, burst_s
        self._budgets: OrderedDict[str, WorkBudget] = OrderedDict()
        #: Seconds agents were not read for, in all (a metric).
        self.throttled_s = 0.0

    def charge(self, agent_id: str, seconds: float, now_ms: int) -> float:
        """Charge ``seconds`` of work to ``agent_id``; seconds to wait before reading it."""
        budgets = self._budgets
        budget = budgets.get(agent_id)
        if budget is None:
            budget = budgets[agent_id] = WorkBudget(self.per_s, self.burst_s, now_ms)
            if len(budgets) > MAX_TRACKED:
                budgets.popitem(last=False)
        else:
            budgets.move_to_end(agent_id)
        wait = budget.charge(seconds, now_ms)
        self.throttled_s += wait
        return wait
