"""What a long-running server process sets for itself at start: its open-file limit and
the garbage collector's pace."""

from __future__ import annotations

import gc
import logging
import resource

__all__ = ["raise_open_file_limit", "tune_gc"]

log = logging.getLogger("monitoring_ws.serve")


def raise_open_file_limit() -> tuple[int, int]:
    """Raise the soft RLIMIT_NOFILE to the hard limit (each agent holds a socket)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError) as exc:
            log.warning("could not raise the open-file limit from %d: %s", soft, exc)
    return soft, hard


def tune_gc() -> None:
    """Fewer, cheaper garbage collections for a long-running server process.

    Full collections scan every tracked object, tens of ms with a thousand agents
    connected: they set the tail latency of commands. What is loaded at start-up is
    frozen out of them, and young collections run less often (docs/performance.md).
    """
    gc.freeze()
    gc.set_threshold(5000, 20, 100)
