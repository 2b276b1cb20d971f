"""Helpers for building frames in tests, and how many examples property tests try."""

from __future__ import annotations

import itertools
import json
import os
from typing import Any

from monitoring_ws.protocol import MessageType, canonicalize, derive_agent_key, seal, sign

SECRET = "test-master-secret"
AGENT = "i-0abc123def4567890"
KEY = derive_agent_key(SECRET, AGENT)
NOW = 1_732_550_400_000
HELLO = {
    "protocol": 1,
    "agentVersion": "1.0.0",
    "hostname": "web-01",
    "capabilities": {"commands": ["ping"], "features": []},
}
_counter = itertools.count()


def nonce() -> str:
    return f"00000000-0000-4000-8000-{next(_counter):012d}"


def frame(
    kind: MessageType | str,
    payload: dict[str, Any],
    *,
    agent_id: str = AGENT,
    key: bytes = KEY,
    ts: int = NOW,
    nonce_value: str | None = None,
) -> str:
    """A correctly signed frame."""
    return seal(
        MessageType(kind),
        agent_id,
        payload,
        key=key,
        ts=ts,
        nonce=nonce_value or nonce(),
    ).to_frame()


def resign(fields: dict[str, Any], key: bytes = KEY) -> str:
    """Re-sign arbitrary (possibly invalid) envelope fields as JSON text."""
    unsigned = {k: v for k, v in fields.items() if k != "signature"}
    return json.dumps({**unsigned, "signature": sign(key, canonicalize(unsigned))})


def examples(deep: int) -> int:
    """A property test's example count: ``deep`` with ``HYPOTHESIS_PROFILE=deep`` (the
    thorough run, docs/security.md), a tenth of it (at least 100) in the everyday suite."""
    return deep if os.environ.get("HYPOTHESIS_PROFILE") == "deep" else max(100, deep // 10)
