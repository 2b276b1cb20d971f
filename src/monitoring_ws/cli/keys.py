"""``derive-key`` and ``check-frame``: for whoever writes or debugs an agent."""

from __future__ import annotations

import argparse
import sys
import time
from typing import Any

from ..protocol import (
    AGENT_ID,
    TIMESTAMP_WINDOW_MS,
    CloseCode,
    ProtocolError,
    Sender,
    check_timestamp,
    decode,
    derive_agent_key,
    parse_agent_key,
    verify,
)
from .common import SECRET_ENV, secret_from_env, warn_secret_in_argv

__all__ = ["add"]


def add(commands: Any) -> None:
    derive = commands.add_parser(
        "derive-key",
        help=f"print an agent's derived key (hex) from the master secret in ${SECRET_ENV}",
    )
    derive.add_argument("agent_id", metavar="AGENT_ID")
    derive.set_defaults(run=_derive_key)

    check = commands.add_parser(
        "check-frame",
        help="explain what a receiver says of one JSON frame (for agent implementers)",
    )
    check.add_argument("file", nargs="?", default="-", help="file with the frame (default: stdin)")
    check.add_argument(
        "--sender",
        choices=[s.value for s in Sender],
        default=Sender.AGENT.value,
        help="who wrote the frame (the payload schema depends on it)",
    )
    check.add_argument(
        "--agent-key",
        metavar="HEX",
        help=f"verify with this derived key instead of the secret in ${SECRET_ENV}",
    )
    check.set_defaults(run=_check_frame)


def _derive_key(args: argparse.Namespace) -> int:
    if not AGENT_ID.fullmatch(args.agent_id):
        raise SystemExit(
            f"monitoring-ws: invalid agent id {args.agent_id!r}: use 1-128 characters of "
            "[A-Za-z0-9._:-], starting with a letter or digit (an EC2 instance id works)"
        )
    print(derive_agent_key(secret_from_env(), args.agent_id).hex())
    return 0


def _check_frame(args: argparse.Namespace) -> int:
    """Explain, check by check, what a receiver would say of one frame."""
    if args.file == "-":
        frame = sys.stdin.read().strip()
    else:
        try:
            with open(args.file, encoding="utf-8") as handle:
                frame = handle.read().strip()
        except (OSError, UnicodeDecodeError) as exc:
            raise SystemExit(f"monitoring-ws: cannot read {args.file}: {exc}") from None
    sender = Sender(args.sender)
    try:
        message = decode(frame, sender=sender)
    except ProtocolError as error:
        print(f"refused: close {int(error.code)} ({error.code.name}): {error.reason}")
        return 1
    envelope = message.envelope
    print(f"ok   size, JSON, schema: {envelope.type.value} from {envelope.agent_id}")
    print(f"     signing input: {message.signing_input.decode('utf-8')}")
    if args.agent_key:
        warn_secret_in_argv("--agent-key", "MONITORING_WS_SECRET (the key is derived)")
        try:
            keys: tuple[bytes, ...] = (parse_agent_key(args.agent_key),)
        except ValueError as exc:
            raise SystemExit(f"monitoring-ws: --agent-key: {exc}") from None
    else:
        secret = secret_from_env()
        keys = (derive_agent_key(secret, envelope.agent_id), secret.encode("utf-8"))
    try:
        check_timestamp(envelope.ts, int(time.time() * 1000))
        print(f"ok   ts within {TIMESTAMP_WINDOW_MS // 1000} s of this machine's clock")
    except ProtocolError as error:
        print(f"FAIL {error.reason} (close {int(CloseCode.AUTH_FAILED)})")
    key = verify(keys, message.signing_input, envelope.signature)
    if key is None:
        print(f"FAIL signature does not verify (close {int(CloseCode.AUTH_FAILED)})")
        return 1
    how = "the derived agent key" if key == keys[0] else "the raw master secret (seed mode)"
    print(f"ok   signature verifies with {how}")
    return 0
