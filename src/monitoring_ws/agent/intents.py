"""The agent's check of operator signatures (docs/security.md, "Operator-signed
commands"): in ``requireOperatorSignature`` mode a command runs only when the intent the
server relayed verifies with a trusted operator key, names this agent, is within its
window, asks for exactly this command and its nonce is new."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any, Protocol

from ..clock import wall_ms
from ..protocol import Command, CommandError
from ..protocol.intent import SKEW_MS, IntentRefusedError, SignedIntent, check_intent
from .settings import AgentSettings

__all__ = ["IntentGate", "NonceBook"]

log = logging.getLogger("monitoring_ws.agent")


class NonceBook(Protocol):
    """Where used nonces are kept (the outbox's file)."""

    def claim_nonce(self, nonce: str, command_id: str, until_ms: int, now_ms: int) -> bool: ...


class _InMemory:
    """For an agent without a state directory: bounded by the intents' windows."""

    def __init__(self) -> None:
        self._seen: dict[str, tuple[str, int]] = {}

    def claim_nonce(self, nonce: str, command_id: str, until_ms: int, now_ms: int) -> bool:
        self._seen = {n: v for n, v in self._seen.items() if v[1] >= now_ms}
        return self._seen.setdefault(nonce, (command_id, until_ms))[0] == command_id


class IntentGate:
    def __init__(self, settings: AgentSettings, nonces: NonceBook | None = None) -> None:
        self.settings = settings
        self.nonces: NonceBook = nonces or _InMemory()

    def refusal(self, command: Command) -> CommandError | None:
        """Why ``command`` may not run, or None."""
        return self.check(command.command, command.args, command.intent, command.command_id)

    def check(
        self, name: str, args: Mapping[str, Any], intent: Mapping[str, Any] | None, use: str
    ) -> CommandError | None:
        """Why ``name`` with ``args`` (a command, or a ``shell``/``tunnel`` open) may not
        happen, or None; ``use`` names this use of the intent (a replay is another use).
        Without operator keys nothing is checked (an intent is then the server's word)."""
        settings = self.settings
        if not settings.operator_keys:
            return None
        if intent is None:
            if not settings.requires_signature(name):
                return None
            return CommandError(
                "operator_signature_required",
                f"this agent runs {name} only when an operator signed it "
                "(requireOperatorSignature): sign it with `monitoring-ws ctl` and an "
                "operator key",
            )
        now = wall_ms()
        try:
            signed = SignedIntent.from_json(intent)
            holding = check_intent(
                signed,
                agent_id=settings.agent_id,
                command=name,
                args=args,
                now_ms=now,
                trusted=settings.operator_keys,
                quorum=settings.operator_quorum.get(name, 1),
            )
        except IntentRefusedError as exc:
            log.warning("%s (%s) refused: %s", use, name, exc.message)
            return CommandError(exc.code, exc.message)
        until = signed.intent.expires_ms + SKEW_MS
        if not self.nonces.claim_nonce(signed.intent.nonce, use, until, now):
            log.warning("%s (%s) refused: its intent was used before", use, name)
            return CommandError(
                "operator_signature_replayed",
                "the operator's signature was already used for another command",
            )
        log.info("%s (%s) signed by operator key %s", use, name, ", ".join(holding))
        return None
