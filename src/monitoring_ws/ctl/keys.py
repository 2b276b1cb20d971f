"""Operator keys (docs/security.md, "Operator-signed commands"): Ed25519 key pairs in
``keys/NAME.json`` under the client config dir (0600), optionally sealed with a
passphrase, and the intents ``ctl`` signs with the default one.

A sealed key keeps ``seed XOR pad`` where ``pad || mac_key = scrypt(passphrase, salt)``,
with an HMAC over the sealed bytes to tell a wrong passphrase from a damaged file (the
standard library has scrypt and no cipher; a 32-byte secret sealed once per salt needs
none). The passphrase comes from ``$MONITORING_WS_KEY_PASSPHRASE`` or a prompt.
"""

from __future__ import annotations

import base64
import getpass
import hashlib
import hmac
import json
import os
import re
import secrets
import stat
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TextIO

from ..protocol.ed25519 import KEY_PREFIX, key_id, public_key
from ..protocol.intent import MAX_WINDOW_MS, Intent, sign_intent
from .settings import CtlError, config_dir

__all__ = ["create_key", "default_key", "keys_create", "keys_list", "signed_intent"]

PASSPHRASE_ENV = "MONITORING_WS_KEY_PASSPHRASE"  # noqa: S105 - a variable's name
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
_SCRYPT = {"n": 1 << 15, "r": 8, "p": 1}
#: How long a signed intent holds beyond the command's own timeout (queueing, clocks).
MARGIN_MS = 5 * 60_000


def _keys_dir(environ: Mapping[str, str]) -> Path:
    return config_dir(environ) / "keys"


def _derive(passphrase: str, salt: bytes) -> tuple[bytes, bytes]:
    derived = hashlib.scrypt(passphrase.encode(), salt=salt, **_SCRYPT, maxmem=64 << 20, dklen=64)
    return derived[:32], derived[32:]


def _public_text(seed: bytes) -> str:
    return KEY_PREFIX + base64.b64encode(public_key(seed)).decode()


def create_key(
    name: str, *, passphrase: str | None, default: bool, environ: Mapping[str, str] = os.environ
) -> tuple[Path, str]:
    """A new key named ``name``: its file and its public key."""
    if not _NAME.fullmatch(name):
        raise CtlError("a key's name: 1-64 of [A-Za-z0-9._-]", 2)
    where = _keys_dir(environ)
    path = where / f"{name}.json"
    if path.exists():
        raise CtlError(f"{path} exists: a key is never overwritten (pick another name)", 2)
    seed = secrets.token_bytes(32)
    record: dict[str, Any] = {"name": name, "publicKey": _public_text(seed), "default": default}
    if passphrase:
        salt = secrets.token_bytes(16)
        pad, mac_key = _derive(passphrase, salt)
        sealed = bytes(a ^ b for a, b in zip(seed, pad, strict=True))
        record["sealed"] = {
            "kdf": "scrypt",
            **_SCRYPT,
            "salt": base64.b64encode(salt).decode(),
            "seed": base64.b64encode(sealed).decode(),
            "mac": hmac.new(mac_key, sealed, hashlib.sha256).hexdigest(),
        }
    else:
        record["seed"] = base64.b64encode(seed).decode()
    where.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        json.dump(record, out, indent=2)
    return path, record["publicKey"]


def _records(environ: Mapping[str, str]) -> list[tuple[Path, dict[str, Any]]]:
    found = []
    for path in sorted(_keys_dir(environ).glob("*.json")):
        if stat.S_IMODE(path.stat().st_mode) & 0o077:
            raise CtlError(f"{path} may be read by others: chmod 600 {path}", 2)
        try:
            found.append((path, json.loads(path.read_text(encoding="utf-8"))))
        except (OSError, ValueError) as exc:
            raise CtlError(f"cannot read the key {path}: {exc}", 2) from None
    return found


def default_key(
    name: str | None = None, environ: Mapping[str, str] = os.environ
) -> dict[str, Any] | None:
    """The key to sign with: ``name``, else the only one, else the one marked default;
    None when there is no key at all."""
    records = _records(environ)
    if name is not None:
        chosen = [record for path, record in records if path.stem == name]
        if not chosen:
            raise CtlError(f"no operator key {name!r}: ctl keys list", 2)
        return chosen[0]
    if not records:
        return None
    if len(records) == 1:
        return records[0][1]
    marked = [record for _, record in records if record.get("default") is True]
    if len(marked) != 1:
        raise CtlError("several operator keys and no single default: give --key NAME", 2)
    return marked[0]


def _seed(record: Mapping[str, Any], environ: Mapping[str, str]) -> bytes:
    if "seed" in record:
        return base64.b64decode(record["seed"])
    sealed = record["sealed"]
    passphrase = environ.get(PASSPHRASE_ENV) or getpass.getpass(
        f"passphrase of operator key {record['name']}: "
    )
    pad, mac_key = _derive(passphrase, base64.b64decode(sealed["salt"]))
    data = base64.b64decode(sealed["seed"])
    expected = hmac.new(mac_key, data, hashlib.sha256).hexdigest()
    if not hmac.compare_digest(expected, sealed["mac"]):
        raise CtlError(f"wrong passphrase for operator key {record['name']}", 2)
    return bytes(a ^ b for a, b in zip(data, pad, strict=True))


def signed_intent(
    record: Mapping[str, Any],
    command: str,
    args: Mapping[str, Any],
    agents: list[str],
    *,
    lifetime_ms: int,
    selector: str | None = None,
    environ: Mapping[str, str] = os.environ,
) -> dict[str, Any]:
    """An intent for ``command`` on ``agents``, signed with ``record``'s key."""
    return Signer(_seed(record, environ)).sign(
        command, args, agents, lifetime_ms=lifetime_ms, selector=selector
    )


class Signer:
    """One operator key, unsealed once (``forward`` signs each connection it opens)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed

    def sign(
        self,
        command: str,
        args: Mapping[str, Any],
        agents: list[str],
        *,
        lifetime_ms: int,
        selector: str | None = None,
    ) -> dict[str, Any]:
        now = int(time.time() * 1000)
        intent = Intent(
            command=command,
            args=dict(args),
            agents=tuple(sorted(agents)),
            not_before_ms=now,
            # A long job's window stops at the most an intent may have (7 days).
            expires_ms=now + min(lifetime_ms + MARGIN_MS, MAX_WINDOW_MS),
            nonce=secrets.token_urlsafe(18),
            selector=selector,
        )
        return sign_intent(intent, [self._seed]).to_json()

    def channel(self, kind: str, params: Mapping[str, Any], agent_id: str) -> str:
        """A shell's or tunnel's open, signed, as ``?intent=`` carries it (base64url)."""
        signed = self.sign(kind, params, [agent_id], lifetime_ms=60_000)
        return base64.urlsafe_b64encode(json.dumps(signed).encode()).decode().rstrip("=")


def signer_for(args: Any) -> Signer | None:
    """``--key`` or the default key, unsealed; None with ``--no-sign`` or no key."""
    if getattr(args, "no_sign", False):
        return None
    record = default_key(getattr(args, "key", None))
    return None if record is None else Signer(_seed(record, os.environ))


def keys_create(api: Any, args: Any, out: TextIO) -> int:
    passphrase = None
    if args.passphrase:
        passphrase = os.environ.get(PASSPHRASE_ENV) or getpass.getpass("passphrase: ")
        if not os.environ.get(PASSPHRASE_ENV) and getpass.getpass("again: ") != passphrase:
            raise CtlError("the passphrases differ", 2)
    path, public = create_key(args.name, passphrase=passphrase, default=args.default)
    out.write(f"wrote {path} (0600); give agents its public key (operatorKeys):\n{public}\n")
    return 0


def keys_list(api: Any, args: Any, out: TextIO) -> int:
    rows = []
    for path, record in _records(os.environ):
        public = str(record.get("publicKey", ""))
        raw = base64.b64decode(public[len(KEY_PREFIX) :]) if public.startswith(KEY_PREFIX) else b""
        rows.append(
            {
                "name": path.stem,
                "keyId": key_id(raw),
                "publicKey": public,
                "default": record.get("default") is True,
                "passphrase": "sealed" in record,
            }
        )
    if args.output == "json":
        out.write(json.dumps(rows, indent=2) + "\n")
        return 0
    for row in rows:
        marks = ("default " if row["default"] else "") + ("sealed" if row["passphrase"] else "")
        out.write(f"{row['name']}\t{row['keyId']}\t{row['publicKey']}\t{marks.strip()}\n")
    if not rows:
        out.write(f"no operator keys in {_keys_dir(os.environ)}: ctl keys create NAME\n")
    return 0


def sign_if_keyed(
    args: Any,
    command: str,
    command_args: Mapping[str, Any],
    agents: list[str],
    *,
    lifetime_ms: int,
    selector: str | None = None,
) -> dict[str, Any] | None:
    """The signed intent to send along, with ``--key`` or the default key; None with
    ``--no-sign`` or when this operator has no key."""
    signer = signer_for(args)
    if signer is None:
        return None
    if not agents:
        raise CtlError("no agent matches: nothing to sign", 1)
    return signer.sign(command, command_args, agents, lifetime_ms=lifetime_ms, selector=selector)


def selected_ids(api: Any, selector: str) -> list[str]:
    """The agents a selector names now: what a job's intent is signed for."""
    return [
        agent["agentId"]
        for agent in api.call("GET", "/api/agents", params={"selector": selector})["agents"]
    ]
