"""What both fuzzers share: libFuzzer through atheris when it is installed (coverage-
guided, started from the seeds and a dictionary), else a seeded random mutator over the
seeds that runs the same checks without coverage."""

from __future__ import annotations

import json
import random
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

try:
    import atheris
except ImportError:  # only where no wheel exists: the fallback below
    atheris = None

__all__ = ["atheris", "fuzz"]


def _mutate(rng: random.Random, data: bytearray, seeds: Sequence[bytes]) -> None:
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(4)
        at = rng.randrange(len(data) + 1)
        if op == 0:
            data[at:at] = bytes([rng.randrange(256)])
        elif op == 1 and len(data) > 2:
            del data[min(at, len(data) - 1)]
        elif op == 2:
            data[at:at] = rng.choice(seeds)[2:][: rng.randrange(1, 40)]
        elif len(data) > 2:
            data[min(at, len(data) - 1)] = rng.randrange(256)


def _fallback(
    one_input: Callable[[bytes], Any], seeds: Sequence[bytes], runs: int, seed: int
) -> None:
    rng = random.Random(seed)
    corpus = [bytearray(s) for s in seeds]
    started = time.monotonic()
    for i in range(runs):
        data = bytearray(rng.choice(corpus))
        _mutate(rng, data, seeds)
        one_input(bytes(data))
        if rng.random() < 0.01:
            corpus.append(data)
        if i and i % 100_000 == 0:
            print(f"#{i} runs, {i / (time.monotonic() - started):.0f}/s", flush=True)
    print(f"Done {runs} runs in {time.monotonic() - started:.0f} s (random mutator)", flush=True)


def fuzz(
    one_input: Callable[[bytes], Any],
    seeds: Sequence[bytes],
    *,
    dictionary: Sequence[str] = (),
    name: str = "mws-fuzz",
) -> None:
    """Run ``one_input`` as libFuzzer (or the fallback) is told by ``sys.argv``."""
    if atheris is None:
        runs = next((int(a[6:]) for a in sys.argv if a.startswith("-runs=")), 100_000)
        seed = next((int(a[6:]) for a in sys.argv if a.startswith("-seed=")), 1)
        _fallback(one_input, seeds, runs, seed)
        return
    argv = list(sys.argv)
    if not any(not a.startswith("-") for a in argv[1:]):  # no corpus given: start from seeds
        corpus = Path(tempfile.mkdtemp(prefix=f"{name}-"))
        for i, seed in enumerate(seeds):
            (corpus / f"seed-{i}").write_bytes(seed)
        argv.append(str(corpus))
    if dictionary and not any(a.startswith("-dict=") for a in argv):
        words = Path(tempfile.mkstemp(prefix=f"{name}-", suffix=".dict")[1])
        words.write_text("".join(f"{json.dumps(json.dumps(w))}\n" for w in dictionary))
        argv.append(f"-dict={words}")
    atheris.Setup(argv, one_input)
    atheris.Fuzz()
