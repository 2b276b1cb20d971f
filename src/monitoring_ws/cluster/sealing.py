"""Signed messages between the nodes of a cluster (no I/O; time passed in).

Whoever can write to Redis could otherwise publish a command that a node signs and sends
to its agent, forge presence, or kick agents off. Every node-to-node message and every
presence value is sealed with a cluster key derived from the master secret (which only
the nodes hold): ``{"m": message, "ts": ms, "nonce": uuid, "sig": hex}``, the signature
an HMAC-SHA256 over the RFC 8785 form of the first three members. A node accepts a
message only with a good signature, a ``ts`` within the window and (for messages, not
presence values that are read many times) a nonce not seen before. Presence values also
seal their expiry, ``"exp"``: a value copied back after its agent left (anyone who can
write to Redis could) is refused once its expiry has passed.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import uuid
from collections.abc import Sequence
from typing import Any

from ..protocol import MemoryReplayWindow, ReplayVerdict, canonicalize, sign, verify

__all__ = ["CLUSTER_KEY_LABEL", "NodeSeal", "cluster_key"]

CLUSTER_KEY_LABEL = "monitoring-ws/cluster-key/v1"
#: How far a sealed message's ``ts`` may be from this node's clock.
WINDOW_MS = 30_000
_REPLAY_NAME = "cluster"


def cluster_key(master_secret: str) -> bytes:
    """The key nodes sign with: HMAC-SHA256(master secret, the label)."""
    return hmac.digest(master_secret.encode(), CLUSTER_KEY_LABEL.encode(), hashlib.sha256)


class NodeSeal:
    """Seals with the first key, opens with any (master-secret rotation)."""

    def __init__(self, master_secrets: Sequence[str]) -> None:
        if not master_secrets:
            raise ValueError("a cluster needs a master secret to derive its key")
        self._keys = tuple(cluster_key(secret) for secret in master_secrets)
        self._seen = MemoryReplayWindow(WINDOW_MS)
        #: Messages refused (bad signature, stale, replayed, malformed).
        self.refused = 0

    def rekey(self, master_secrets: Sequence[str]) -> None:
        """SIGHUP: seal with the new first secret's key, open with any of them. Rotate in
        two reloads (docs/scaling.md): first append the new secret on every node, then put
        it first, so that no node seals with a key another cannot open."""
        if not master_secrets:
            raise ValueError("a cluster needs a master secret to derive its key")
        self._keys = tuple(cluster_key(secret) for secret in master_secrets)

    def seal(self, message: dict[str, Any], now_ms: int, *, expires_ms: int | None = None) -> str:
        """The sealed text; ``expires_ms``: when it stops being good (presence values)."""
        body: dict[str, Any] = {"m": message, "ts": now_ms, "nonce": str(uuid.uuid4())}
        if expires_ms is not None:
            body["exp"] = expires_ms
        return json.dumps({**body, "sig": sign(self._keys[0], canonicalize(body))})

    def open(
        self, data: str, now_ms: int, *, once: bool = True, expiring: bool = False
    ) -> dict[str, Any] | None:
        """The message, or None (counted) when it is not one this cluster sealed lately.

        ``once``: refuse a nonce seen before (pub/sub messages); values read many times
        pass ``once=False``, and their ``ts`` is not checked. ``expiring``: the value must
        carry a sealed expiry that has not passed (presence values, with ``WINDOW_MS`` of
        leeway for the nodes' clocks)."""
        try:
            sealed = json.loads(data)
            body = {"m": sealed["m"], "ts": sealed["ts"], "nonce": sealed["nonce"]}
            if "exp" in sealed:
                body["exp"] = sealed["exp"]
            signature = sealed["sig"]
            if not (
                isinstance(body["m"], dict)
                and isinstance(body["ts"], int)
                and isinstance(body["nonce"], str)
                and isinstance(body.get("exp", 0), int)
                and isinstance(signature, str)
            ):
                raise TypeError("wrong types")  # noqa: TRY301 - one path for every malformation
            signed = canonicalize(body)
        except (ValueError, TypeError, KeyError):
            self.refused += 1
            return None
        if verify(self._keys, signed, signature) is None:
            self.refused += 1
            return None
        if expiring and ("exp" not in body or now_ms > body["exp"] + WINDOW_MS):
            self.refused += 1
            return None
        if once:
            if abs(now_ms - body["ts"]) > WINDOW_MS:
                self.refused += 1
                return None
            verdict = self._seen.check(_REPLAY_NAME, body["nonce"], body["ts"], now_ms)
            if verdict is not ReplayVerdict.NEW:
                self.refused += 1
                return None
        message: dict[str, Any] = body["m"]
        return message
