"""Operator intents (docs/protocol.md, "Operator intents"): a command as an operator
signed it, carried unchanged by the server inside its own HMAC-signed ``command`` frame, so
that an agent in ``requireOperatorSignature`` mode runs only what a trusted operator key
asked for. Plain values and checks; the agent keeps the nonces it has seen.

Wire form (the ``intent`` member of a ``command`` payload, with the ``intents`` feature)::

    {"intent": {"v": 1, "command": "run", "args": {...}, "agents": ["web-1", ...],
                "selector": "env=prod", "notBefore": 1767225600000,
                "expires": 1767225900000, "nonce": "<16-64 of [A-Za-z0-9_-]>"},
     "signatures": [{"keyId": "<16 hex>", "signature": "<base64 of 64 bytes>"}]}

Each signature is Ed25519 over ``SIGNED_PREFIX`` and the intent's canonical JSON (RFC
8785). ``selector`` is what the operator asked for (kept for the record); ``agents`` is
the set it resolved to, which is what an agent checks its id against.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any

import attrs

from .canonical import canonicalize
from .ed25519 import key_id, sign, verify

__all__ = [
    "FEATURE_INTENTS",
    "MAX_INTENT_AGENTS",
    "SIGNED_PREFIX",
    "Intent",
    "IntentRefusedError",
    "SignedIntent",
    "check_intent",
    "fitting_args",
    "sign_intent",
    "signer_ids",
]

FEATURE_INTENTS = "intents"
SIGNED_PREFIX = b"monitoring-ws intent v1\n"
#: Agents one intent may name (a larger job is signed as several intents).
MAX_INTENT_AGENTS = 5000
#: The longest window an intent may have: a job can run for hours, not for ever.
MAX_WINDOW_MS = 7 * 86_400_000
#: Clock difference forgiven between the operator's machine and the agent.
SKEW_MS = 60_000
_NONCE = re.compile(r"[A-Za-z0-9_-]{16,64}")
_KEY_ID = re.compile(r"[0-9a-f]{16}")
_AGENT = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_COMMAND = re.compile(r"[A-Za-z0-9._:-]{1,64}")


class IntentRefusedError(Exception):
    """Not to be run: ``code`` says why, and every code names the signature."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _invalid(message: str) -> IntentRefusedError:
    return IntentRefusedError("operator_signature_invalid", message)


def _int(data: Mapping[str, Any], name: str) -> int:
    value = data.get(name)
    if type(value) is not int or value < 0:
        raise _invalid(f"the intent's {name} must be a whole number of milliseconds")
    return value


@attrs.frozen
class Intent:
    command: str
    args: Mapping[str, Any]
    agents: tuple[str, ...]
    not_before_ms: int
    expires_ms: int
    nonce: str
    selector: str | None = None

    def to_json(self) -> dict[str, Any]:
        value: dict[str, Any] = {
            "v": 1,
            "command": self.command,
            "args": dict(self.args),
            "agents": list(self.agents),
            "notBefore": self.not_before_ms,
            "expires": self.expires_ms,
            "nonce": self.nonce,
        }
        if self.selector is not None:
            value["selector"] = self.selector
        return value

    @classmethod
    def from_json(cls, data: Any) -> Intent:
        if not isinstance(data, Mapping) or data.get("v") != 1:
            raise _invalid("not an intent of version 1")
        command, args, agents = data.get("command"), data.get("args"), data.get("agents")
        if not isinstance(command, str) or not _COMMAND.fullmatch(command):
            raise _invalid("the intent's command is not a command name")
        if not isinstance(args, Mapping):
            raise _invalid("the intent's args must be an object")
        if (
            not isinstance(agents, list)
            or not 0 < len(agents) <= MAX_INTENT_AGENTS
            or not all(isinstance(a, str) and _AGENT.fullmatch(a) for a in agents)
        ):
            raise _invalid(f"the intent names 1 to {MAX_INTENT_AGENTS} agent ids")
        nonce, selector = data.get("nonce"), data.get("selector")
        if not isinstance(nonce, str) or not _NONCE.fullmatch(nonce):
            raise _invalid("the intent's nonce is 16-64 of [A-Za-z0-9_-]")
        if selector is not None and (not isinstance(selector, str) or len(selector) > 4096):
            raise _invalid("the intent's selector must be text")
        not_before, expires = _int(data, "notBefore"), _int(data, "expires")
        if not 0 < expires - not_before <= MAX_WINDOW_MS:
            raise _invalid("the intent's window must be positive and at most 7 days")
        return cls(command, dict(args), tuple(agents), not_before, expires, nonce, selector)

    def signed_bytes(self) -> bytes:
        return SIGNED_PREFIX + canonicalize(self.to_json())


@attrs.frozen
class SignedIntent:
    intent: Intent
    #: (keyId, signature) pairs: one per operator key that signed.
    signatures: tuple[tuple[str, bytes], ...]

    def to_json(self) -> dict[str, Any]:
        return {
            "intent": self.intent.to_json(),
            "signatures": [
                {"keyId": kid, "signature": base64.b64encode(sig).decode()}
                for kid, sig in self.signatures
            ],
        }

    @classmethod
    def from_json(cls, data: Any) -> SignedIntent:
        if not isinstance(data, Mapping):
            raise _invalid("the intent must be an object")
        intent = Intent.from_json(data.get("intent"))
        entries = data.get("signatures")
        if not isinstance(entries, list) or not 0 < len(entries) <= 16:
            raise _invalid("an intent carries 1 to 16 signatures")
        signatures = []
        for entry in entries:
            if not isinstance(entry, Mapping):
                raise _invalid("a signature is {keyId, signature}")
            kid, text = entry.get("keyId"), entry.get("signature")
            if not isinstance(kid, str) or not _KEY_ID.fullmatch(kid) or not isinstance(text, str):
                raise _invalid("a signature is {keyId: 16 hex digits, signature: base64}")
            try:
                signatures.append((kid, base64.b64decode(text, validate=True)))
            except (binascii.Error, ValueError):
                raise _invalid("a signature is not base64") from None
        return cls(intent, tuple(signatures))


def fitting_args(data: Any, command: str, args: Mapping[str, Any] | None) -> dict[str, Any]:
    """The args of the intent ``data`` when it is well formed and asks for ``command``
    (and for ``args``, when given): what a server checks before it relays one (the agent
    checks the signatures). IntentRefusedError saying what does not fit."""
    signed = SignedIntent.from_json(data).intent
    if signed.command != command:
        raise _invalid(f"it was signed for {signed.command!r}, not {command!r}")
    if args is not None and canonicalize(dict(args)) != canonicalize(dict(signed.args)):
        raise _invalid("the args differ from the ones the operator signed")
    return dict(signed.args)


def signer_ids(data: Mapping[str, Any]) -> list[str]:
    """The key ids a (checked) intent's signatures name: for records and audit lines."""
    return [str(entry["keyId"]) for entry in data.get("signatures", ())]


def sign_intent(intent: Intent, seeds: Iterable[bytes]) -> SignedIntent:
    """``intent`` signed with each private key (32-byte seeds)."""
    from .ed25519 import public_key  # noqa: PLC0415 - signing is the operator's side

    body = intent.signed_bytes()
    return SignedIntent(
        intent, tuple((key_id(public_key(seed)), sign(seed, body)) for seed in seeds)
    )


def check_intent(
    signed: SignedIntent,
    *,
    agent_id: str,
    command: str,
    args: Mapping[str, Any],
    now_ms: int,
    trusted: Iterable[bytes],
    quorum: int = 1,
) -> tuple[str, ...]:
    """The key ids of the trusted keys whose signatures hold, when ``signed`` asks for
    exactly this command on this agent now; IntentRefusedError otherwise. The nonce is the
    caller's to check (it keeps the ones it has seen)."""
    intent = signed.intent
    if intent.command != command or canonicalize(dict(intent.args)) != canonicalize(dict(args)):
        raise _invalid("the command is not the one the operator signed (changed on the way)")
    if agent_id not in intent.agents:
        raise IntentRefusedError(
            "operator_signature_wrong_agent", f"the operator's signature does not name {agent_id}"
        )
    if not intent.not_before_ms - SKEW_MS <= now_ms <= intent.expires_ms + SKEW_MS:
        raise IntentRefusedError(
            "operator_signature_expired", "the operator's signature is outside its time window"
        )
    keys = {key_id(key): key for key in trusted}
    body = intent.signed_bytes()
    known = [(kid, sig) for kid, sig in signed.signatures if kid in keys]
    if not known:
        raise IntentRefusedError(
            "operator_signature_untrusted", "no key this agent trusts signed the intent"
        )
    if not all(verify(keys[kid], body, sig) for kid, sig in known):
        raise _invalid("an operator signature does not verify: the intent was changed")
    holding = tuple(sorted({kid for kid, _ in known}))  # one key signing twice counts once
    if len(holding) < quorum:
        raise IntentRefusedError(
            "operator_signature_quorum",
            f"{command} needs {quorum} operator signatures, {len(holding)} hold",
        )
    return holding
