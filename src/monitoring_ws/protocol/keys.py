"""Agent keys, signing and verification (HMAC-SHA256, constant-time compares)."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable

import attrs

__all__ = [
    "ENROLLED_KEY_PREFIX",
    "KEY_DERIVATION_PREFIX",
    "Keyring",
    "derive_agent_key",
    "derive_enrolled_key",
    "parse_agent_key",
    "sign",
    "verify",
]

KEY_DERIVATION_PREFIX = "monitoring-ws/agent-key/v1:"
#: Enrolled agents' keys: also bound to the generation the server drew at enrollment.
ENROLLED_KEY_PREFIX = "monitoring-ws/agent-key/enrolled/v1:"
_KEY_BYTES = 32


def _secret_bytes(secret: str | bytes) -> bytes:
    return secret.encode("utf-8") if isinstance(secret, str) else secret


def derive_agent_key(master_secret: str | bytes, agent_id: str) -> bytes:
    """``HMAC-SHA256(key=master_secret, msg="monitoring-ws/agent-key/v1:" + agentId)``."""
    message = (KEY_DERIVATION_PREFIX + agent_id).encode("utf-8")
    return hmac.digest(_secret_bytes(master_secret), message, "sha256")


def derive_enrolled_key(master_secret: str | bytes, agent_id: str, generation: str) -> bytes:
    """``HMAC-SHA256(key=master_secret, msg="monitoring-ws/agent-key/enrolled/v1:" + agentId
    + ":" + generation)``: the key of an agent enrolled with that generation (no agentId
    holds ``:`` followed by a generation of another id, so two ids never share a message)."""
    message = f"{ENROLLED_KEY_PREFIX}{agent_id}:{generation}".encode()
    return hmac.digest(_secret_bytes(master_secret), message, "sha256")


def parse_agent_key(hex_key: str) -> bytes:
    """A derived key from its 64-hex-digit form (``wsAgentKey``); ValueError otherwise."""
    text = hex_key.strip()
    if len(text) != 2 * _KEY_BYTES:
        raise ValueError(f"an agent key is {2 * _KEY_BYTES} hex digits, got {len(text)}")
    return bytes.fromhex(text)


def sign(key: bytes, signing_input: bytes) -> str:
    """Lowercase hex HMAC-SHA256 of the canonical bytes."""
    return hmac.digest(key, signing_input, hashlib.sha256).hex()


def verify(keys: tuple[bytes, ...], signing_input: bytes, signature: str) -> bytes | None:
    """The first key whose signature matches (constant-time), or None."""
    for key in keys:
        if hmac.compare_digest(sign(key, signing_input), signature):
            return key
    return None


def _secrets(secrets: Iterable[str | bytes]) -> tuple[bytes, ...]:
    if isinstance(secrets, str | bytes):
        raise TypeError("master_secrets is a sequence of secrets, current first")
    return tuple(_secret_bytes(secret) for secret in secrets)


@attrs.frozen(repr=False)
class Keyring:
    """The server's master secrets, current first, and the keys they give each agent.

    ``seed_compatible`` also accepts an agent signing with a raw master secret as its key
    (how the seed's agents sign); off by default because such an agent holds the secret
    that signs for every agent.
    """

    master_secrets: tuple[bytes, ...] = attrs.field(converter=_secrets)
    seed_compatible: bool = False

    @master_secrets.validator
    def _check(self, _attribute: object, value: tuple[bytes, ...]) -> None:
        if not value or not all(value):
            raise ValueError("a keyring needs at least one non-empty master secret")

    def __repr__(self) -> str:  # never print secrets
        return (
            f"Keyring(<{len(self.master_secrets)} secret(s)>, "
            f"seed_compatible={self.seed_compatible})"
        )

    def keys_for(self, agent_id: str, generation: str | None = None) -> tuple[bytes, ...]:
        """Keys an agent may sign with, in the order they are tried: an enrolled agent's
        (``generation`` given) only those of its generation, never the id's plain key."""
        if generation is not None:
            return tuple(
                derive_enrolled_key(secret, agent_id, generation) for secret in self.master_secrets
            )
        derived = tuple(derive_agent_key(secret, agent_id) for secret in self.master_secrets)
        return derived + self.master_secrets if self.seed_compatible else derived
