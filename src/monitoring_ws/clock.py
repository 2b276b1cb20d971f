"""The wall clock messages are stamped and checked with (Unix milliseconds)."""

from __future__ import annotations

import time


def wall_ms() -> int:
    return time.time_ns() // 1_000_000
