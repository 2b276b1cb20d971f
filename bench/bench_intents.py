"""What operator signatures cost (step 18): the pure-Python Ed25519 that ``ctl`` signs and
agents verify with, the agent's whole intent check, and a release manifest check; prints
one JSON line of medians (milliseconds) over ``--runs`` runs of ``--count`` each, one core.

    .venv/bin/python bench/bench_intents.py [--runs 5] [--count 50]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitoring_ws.protocol.ed25519 import public_key, sign, verify
from monitoring_ws.protocol.intent import Intent, check_intent, sign_intent

SEED = bytes(range(32))
ARGS = {"command": "systemctl restart nginx"}


def _median_ms(work: Callable[[], object], runs: int, count: int) -> float:
    times = []
    for _ in range(runs):
        started = time.perf_counter()
        for _ in range(count):
            work()
        times.append((time.perf_counter() - started) / count * 1000)
    return round(statistics.median(times), 3)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--count", type=int, default=50)
    args = parser.parse_args()
    if hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    public = public_key(SEED)
    message = b"x" * 300
    signature = sign(SEED, message)
    theirs = Ed25519PrivateKey.from_private_bytes(SEED)
    now = int(time.time() * 1000)
    agents = tuple(f"web-{n}" for n in range(1000))
    intent = Intent("run", ARGS, agents, now, now + 60_000, "n" * 20, "role=web")
    signed = sign_intent(intent, [SEED])

    def check() -> object:
        return check_intent(
            signed, agent_id="web-999", command="run", args=ARGS, now_ms=now, trusted=[public]
        )

    result = {
        "bench": "intents",
        "python": platform.python_version(),
        "runs": args.runs,
        "verify_ms": _median_ms(lambda: verify(public, message, signature), args.runs, args.count),
        "sign_ms": _median_ms(lambda: sign(SEED, message), args.runs, args.count),
        "cryptography_sign_ms": _median_ms(lambda: theirs.sign(message), args.runs, args.count),
        "check_intent_1000_agents_ms": _median_ms(check, args.runs, args.count),
        "sign_intent_1000_agents_ms": _median_ms(
            lambda: sign_intent(intent, [SEED]), args.runs, args.count
        ),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
