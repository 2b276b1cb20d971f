"""The agent's check of operator signatures (docs/security.md, "Operator-signed
commands"): in ``requireOperatorSignature`` mode a command runs only when the intent the
server relayed verifies with a trusted operator key, names this agent, is within its
window, asks for exactly this command and its nonce is new.

The trusted keys change only by ``operator_keys``, a command that always needs a current
key's signature; the new set is kept in the state directory beside the outbox, and holds
while the settings file still lists the keys it replaced (an administrator's edit wins)."""

from __future__ import annotations

import base64
import json
import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Protocol

import attrs

from ..clock import wall_ms
from ..private import write_private
from ..protocol import Command, CommandError
from ..protocol.ed25519 import KEY_PREFIX, parse_public_key
from ..protocol.intent import SKEW_MS, IntentRefusedError, SignedIntent, check_intent
from ..protocol.jointoken import keyset_fingerprint
from .handlers import CommandFailed
from .settings import AgentSettings

__all__ = ["KEYS_COMMAND", "IntentGate", "NonceBook"]

#: The command that replaces the trusted operator keys (signed by a current one).
KEYS_COMMAND = "operator_keys"

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
        #: The settings file's own key set: a change kept on disk applies while it stands.
        self._base = keyset_fingerprint(_texts(settings.operator_keys))
        self._load()

    @property
    def _kept(self) -> Path | None:
        settings = self.settings
        if settings.state_dir is None:
            return None
        return settings.state_dir / f"operator-keys-{settings.agent_id}.json"

    def _load(self) -> None:
        kept = self._kept
        if kept is None or not kept.is_file() or not self.settings.operator_keys:
            return
        try:
            data = json.loads(kept.read_text(encoding="utf-8"))
            if data.get("base") != self._base:
                log.warning("%s was made for other settings: the settings' keys hold", kept)
                return
            self._apply(data["keys"], data["require"])
        except (OSError, ValueError, KeyError, TypeError) as exc:
            log.warning("cannot use %s (%s): the settings' operator keys hold", kept, exc)

    def _apply(self, keys: list[str], require: bool | list[str]) -> None:
        signed = None if require is True else frozenset(require or ())
        self.settings = attrs.evolve(
            self.settings,
            operator_keys=tuple(parse_public_key(key) for key in keys),
            signed_commands=signed,
        )

    async def change_keys(self, args: Mapping[str, Any], context: object) -> dict[str, Any]:
        """``operator_keys``: trust exactly ``args["keys"]`` from now on (its intent was
        checked against the current keys before this runs)."""
        keys, require = args.get("keys"), args.get("require", True)
        if not isinstance(keys, list) or not keys or not all(isinstance(k, str) for k in keys):
            raise CommandFailed("bad_args", 'operator_keys needs {"keys": ["ed25519:..."]}')
        if not isinstance(require, bool) and not (
            isinstance(require, list) and all(isinstance(c, str) for c in require)
        ):
            raise CommandFailed("bad_args", "require is true, false or a list of commands")
        try:
            for key in keys:
                parse_public_key(key)
        except ValueError as exc:
            raise CommandFailed("bad_args", f"keys: {exc}") from None
        kept = self._kept
        if kept is not None:
            record = {"base": self._base, "keys": keys, "require": require}
            write_private(kept, json.dumps(record, indent=2) + "\n")
        self._apply(keys, require)
        log.warning("the trusted operator keys are now %s", ", ".join(keys))
        return {"operatorKeys": keys, "requireOperatorSignature": require}

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
            if not settings.requires_signature(name) and name != KEYS_COMMAND:
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


def _texts(keys: Iterable[bytes]) -> list[str]:
    return [KEY_PREFIX + base64.b64encode(key).decode() for key in keys]
