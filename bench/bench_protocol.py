"""Protocol core throughput and replay-window memory; prints one JSON line.

    .venv/bin/python bench/bench_protocol.py [--runs 5] [--nonces 1000000]

Throughput figures are medians of ``--runs`` timed runs on one pinned core.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
import tracemalloc
from collections.abc import Callable

import rfc8785

from monitoring_ws.protocol import (
    Keyring,
    MemoryReplayWindow,
    MessageType,
    Sender,
    ServerSession,
    canonicalize,
    check_timestamp,
    decode,
    derive_agent_key,
    random_nonce,
    seal,
    verify_signature,
)

AGENT = "i-0abc123def4567890"
NOW = 1_732_550_401_234
# A typical metrics sample: the envelope around it is about 300 bytes on the wire.
PAYLOAD = {
    "cpu": {"percent": 12.5, "count": 2},
    "memory": {"percent": 41.3, "used": 1073741824},
    "load": [0.15, 0.1, 0.05],
}


def rate(fn: Callable[[], object], count: int, runs: int) -> float:
    """Median calls per second of ``fn`` over ``runs`` runs of ``count`` calls."""
    results = []
    for _ in range(runs):
        start = time.perf_counter()
        for _ in range(count):
            fn()
        results.append(count / (time.perf_counter() - start))
    return statistics.median(results)


def bytes_per_nonce(count: int) -> float:
    window = MemoryReplayWindow()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for i in range(count):
        window.check(f"agent-{i % 1000}", random_nonce(), NOW + i // 1000, NOW)
    after = tracemalloc.get_traced_memory()[0]
    tracemalloc.stop()
    assert len(window) == count
    return (after - before) / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--nonces", type=int, default=1_000_000)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})

    key = derive_agent_key("bench-secret", AGENT)
    keys = (key,)
    wire = seal(MessageType.METRICS, AGENT, PAYLOAD, key=key, ts=NOW, nonce=random_nonce())
    frame = wire.to_frame()

    def decode_verify() -> None:
        message = decode(frame, sender=Sender.AGENT, agent_id=AGENT)
        check_timestamp(message.envelope.ts, NOW)
        verify_signature(message, keys)

    # The whole server path per frame: decode, verify, replay window, typed event.
    session = ServerSession(Keyring(["bench-secret"]), opened_at_ms=NOW, session_id="b")
    window = MemoryReplayWindow()
    hello = {
        "protocol": 1,
        "agentVersion": "1",
        "hostname": "h",
        "capabilities": {"commands": [], "features": []},
    }
    auth = seal(MessageType.AUTH, AGENT, hello, key=key, ts=NOW, nonce=random_nonce())
    session.receive(auth.to_frame(), NOW, window)
    frames = [
        seal(MessageType.METRICS, AGENT, PAYLOAD, key=key, ts=NOW, nonce=random_nonce()).to_frame()
        for _ in range(args.count * args.runs)
    ]
    feed = iter(frames)

    def session_receive() -> None:
        session.receive(next(feed), NOW, window)

    def sign() -> None:
        seal(MessageType.METRICS, AGENT, PAYLOAD, key=key, ts=NOW, nonce=random_nonce()).to_frame()

    unsigned = wire.unsigned()
    canonical_us = 1e6 / rate(lambda: canonicalize(unsigned), args.count, args.runs)
    parsed = decode(frame, sender=Sender.AGENT).envelope.payload
    parsed_us = 1e6 / rate(lambda: canonicalize(parsed, parsed=True), args.count, args.runs)
    reference_us = 1e6 / rate(lambda: rfc8785.dumps(unsigned), args.count // 5, args.runs)
    result = {
        "bench": "protocol",
        "frame_bytes": len(frame.encode()),
        "decode_verify_msgs_per_s": round(rate(decode_verify, args.count, args.runs)),
        "session_receive_msgs_per_s": round(rate(session_receive, args.count, args.runs)),
        "sign_msgs_per_s": round(rate(sign, args.count, args.runs)),
        "canonical_fast_us": round(canonical_us, 2),
        "canonical_fast_parsed_payload_us": round(parsed_us, 2),
        "canonical_rfc8785_us": round(reference_us, 2),
        "replay_nonces": args.nonces,
        "replay_bytes_per_nonce": round(bytes_per_nonce(args.nonces), 1),
        "runs": args.runs,
        "python": platform.python_version(),
        "machine": f"{platform.machine()} {os.cpu_count()} cpu",
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
