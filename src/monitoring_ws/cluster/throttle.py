"""Warnings a node repeats at most once a minute (Redis outages, foreign messages)."""

from __future__ import annotations

import time

__all__ = ["Throttle"]


class Throttle:
    """``due()`` is true at most once per ``every_s`` seconds (monotonic clock)."""

    def __init__(self, every_s: float = 60.0) -> None:
        self.every_s = every_s
        self._last = -every_s

    def due(self) -> bool:
        now = time.monotonic()
        if now - self._last < self.every_s:
            return False
        self._last = now
        return True
