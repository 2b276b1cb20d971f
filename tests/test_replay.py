"""The in-memory replay window: verdicts, per-agent scope, and eviction at ts + window."""

from __future__ import annotations

from monitoring_ws.protocol import MemoryReplayWindow, ReplayVerdict

from .support import NOW

WINDOW = 300_000


def test_new_then_duplicate() -> None:
    window = MemoryReplayWindow()
    assert window.check("a", "n-0000000000000001", NOW, NOW) is ReplayVerdict.NEW
    assert window.check("a", "n-0000000000000001", NOW, NOW + 1) is ReplayVerdict.DUPLICATE
    # A different ts with the same nonce is still a repeat of the nonce.
    assert window.check("a", "n-0000000000000001", NOW + 5, NOW + 5) is ReplayVerdict.DUPLICATE


def test_nonces_are_per_agent() -> None:
    window = MemoryReplayWindow()
    assert window.check("a", "n-0000000000000001", NOW, NOW) is ReplayVerdict.NEW
    assert window.check("b", "n-0000000000000001", NOW, NOW) is ReplayVerdict.NEW


def test_stale_is_not_remembered() -> None:
    window = MemoryReplayWindow()
    for ts in (NOW - WINDOW - 1, NOW + WINDOW + 1):
        assert window.check("a", f"n-{ts:016d}", ts, NOW) is ReplayVerdict.STALE
    assert len(window) == 0


def test_kept_until_ts_plus_window_and_no_longer() -> None:
    window = MemoryReplayWindow()
    ts = NOW + 200  # a future ts, inside the window
    assert window.check("a", "n-0000000000000001", ts, NOW) is ReplayVerdict.NEW
    window.evict(ts + WINDOW - 1)
    assert len(window) == 1
    window.evict(ts + WINDOW + 1000)
    assert len(window) == 0


def test_eviction_with_out_of_order_timestamps() -> None:
    window = MemoryReplayWindow()
    stamps = [NOW + 100_000, NOW - 250_000, NOW, NOW + 250_000, NOW - 1]
    for i, ts in enumerate(stamps):
        assert window.check("a", f"n-{i:016d}", ts, NOW) is ReplayVerdict.NEW
    for ts in sorted(stamps):
        before = len(window)
        window.evict(ts + WINDOW + 1000)
        assert len(window) == before - 1
    assert len(window) == 0


def test_long_clock_gap_evicts_everything() -> None:
    window = MemoryReplayWindow()
    for i in range(1000):
        window.check("a", f"n-{i:016d}", NOW + i, NOW)
    window.evict(NOW + 10 * 365 * 86_400_000)  # ten years on: no per-second walk
    assert len(window) == 0
    assert window.check("a", "n-0000000000000001", NOW, NOW) is ReplayVerdict.NEW


def test_memory_stays_proportional_to_the_window() -> None:
    window = MemoryReplayWindow()
    now = NOW
    for i in range(20_000):  # 100 messages/s for 200 s
        now = NOW + i * 10
        window.check("a", f"n-{i:016d}", now, now)
    assert len(window) == 20_000
    for i in range(20_000, 40_000):
        now = NOW + WINDOW + 200_000 + i * 10
        window.check("a", f"n-{i:016d}", now, now)
    # Everything from the first run is older than ts + window by now.
    assert len(window) == 20_000
