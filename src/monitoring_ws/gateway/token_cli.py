"""``monitoring-ws token create|list|revoke``: join tokens agents enroll with
(docs/agent.md, "Enrolling"); a subcommand the websocket plugin adds through the
``monitoring_ws.cli`` entry points."""

from __future__ import annotations

import argparse
import json
import re
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..configbase import add_config_option

if TYPE_CHECKING:
    from .config import GatewayConfig
    from .enrollment import JoinTokens

__all__ = ["add", "parse_ttl"]

_TTL = re.compile(r"(\d{1,6})([smhd]?)")
_UNIT = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_ttl(text: str) -> int:
    """``90``, ``30m``, ``1h``, ``7d`` as seconds; ValueError otherwise."""
    match = _TTL.fullmatch(text.strip())
    if match is None or int(match.group(1)) == 0:
        raise ValueError(f"--ttl: a duration such as 30m, 1h or 7d, not {text!r}")
    return int(match.group(1)) * _UNIT[match.group(2)]


def add(commands: Any) -> None:
    token = commands.add_parser("token", help="join tokens agents enroll with")
    actions = token.add_subparsers(dest="action", metavar="ACTION", required=True)
    create = actions.add_parser(
        "create",
        help="print a join token (kept in the server's state directory)",
        description=(
            "Make a join token: `monitoring-ws agent enroll --url https://HOST --token T` on "
            "an agent trades it for the agent's own key. The token carries the server "
            "certificate's fingerprint, so the agent trusts nothing else. Run it where the "
            "server keeps its state (the same --config or --state-dir as serve)."
        ),
    )
    create.add_argument("--ttl", default="1h", help="how long it works (default 1h; 30m, 7d)")
    create.add_argument("--uses", type=int, default=1, help="how many agents (default 1)")
    create.add_argument(
        "--agents", action="append", default=[], metavar="GLOB", help="agentIds it may enroll"
    )
    create.add_argument(
        "--reenroll",
        action="store_true",
        help="may enroll ids already enrolled or known (their old key stops working)",
    )
    listing = actions.add_parser("list", help="the tokens that still work (never secrets)")
    listing.add_argument("-o", "--output", choices=("table", "json"), default="table")
    revoke = actions.add_parser("revoke", help="make a token unusable at once")
    revoke.add_argument("id", help="the token's id (its second part, or the whole token)")
    for parser in (create, listing, revoke):
        add_config_option(parser)
        parser.add_argument("--state-dir", type=Path, metavar="DIR", help="the server's state")
    create.set_defaults(run=_create)
    listing.set_defaults(run=_list)
    revoke.set_defaults(run=_revoke)


def _tokens(args: argparse.Namespace) -> tuple[JoinTokens, GatewayConfig]:
    """The state directory's ``JoinTokens`` and the gateway settings it was found by."""
    from ..host.config import load_monitoring_config  # noqa: PLC0415
    from .config import gateway_config_of  # noqa: PLC0415
    from .enrollment import JoinTokens  # noqa: PLC0415

    whole = load_monitoring_config(args.config, {"server": {"state_dir": args.state_dir}})
    config = gateway_config_of(whole)
    return JoinTokens(config.server.state_dir), config


def _list(args: argparse.Namespace) -> int:
    from ..clock import wall_ms  # noqa: PLC0415
    from ..configbase import ConfigError  # noqa: PLC0415

    try:
        tokens, _ = _tokens(args)
        usable = tokens.usable(wall_ms())
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"monitoring-ws token list: {exc}") from None
    if args.output == "json":
        print(json.dumps([token.to_json() for token in usable], indent=2))
        return 0
    print(f"{'ID':<16}  {'EXPIRES (UTC)':<19}  {'USES':>6}  {'REENROLL':<8}  AGENTS")
    for token in usable:
        expires = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(token.expires_ms / 1000))
        agents = ",".join(token.agents) or "*"
        reenroll = "yes" if token.reenroll else "no"
        print(f"{token.id:<16}  {expires:<19}  {token.uses_left:>6}  {reenroll:<8}  {agents}")
    return 0


def _revoke(args: argparse.Namespace) -> int:
    from ..configbase import ConfigError  # noqa: PLC0415

    text = args.id.strip()
    token_id = text.split(".")[1] if text.startswith("mwsj1.") and text.count(".") == 3 else text
    if not re.fullmatch(r"[a-f0-9]{16}", token_id):
        raise SystemExit(
            "monitoring-ws token revoke: a token id is 16 hex digits (see `token list`)"
        )
    try:
        tokens, _ = _tokens(args)
        existed = tokens.revoke(token_id)
    except (ConfigError, OSError) as exc:
        raise SystemExit(f"monitoring-ws token revoke: {exc}") from None
    if not existed:
        raise SystemExit(f"monitoring-ws token revoke: no token {token_id} (see `token list`)")
    print(f"revoked join token {token_id}")
    return 0


def _create(args: argparse.Namespace) -> int:
    from ..clock import wall_ms  # noqa: PLC0415
    from ..configbase import ConfigError  # noqa: PLC0415
    from ..protocol.jointoken import keyset_fingerprint  # noqa: PLC0415
    from .agent_config import certificate_pin, curl_pin  # noqa: PLC0415

    if not 1 <= args.uses <= 100_000:
        raise SystemExit("monitoring-ws token create: --uses: between 1 and 100000")
    try:
        ttl_s = parse_ttl(args.ttl)
        tokens, config = _tokens(args)
        pin = certificate_pin(config.server, kept=True)
        if pin is not None and certificate_pin(config.server) is None:
            print(
                "monitoring-ws token create: pinning the self-signed certificate in "
                f"{config.server.state_dir / 'tls'} (the server serves it with "
                "--tls-self-signed)",
                file=sys.stderr,
            )
        tokens.prune(wall_ms())
        token = tokens.create(
            ttl_s=ttl_s,
            uses=args.uses,
            agents=args.agents,
            pin=pin,
            now_ms=wall_ms(),
            reenroll=args.reenroll,
            keyset=keyset_fingerprint(config.operator_keys) if config.operator_keys else None,
        )
    except (ConfigError, ValueError, OSError) as exc:
        raise SystemExit(f"monitoring-ws token create: {exc}") from None
    if pin is None:
        print(
            "monitoring-ws token create: warning: no TLS certificate in the settings or in "
            f"{config.server.state_dir / 'tls'}: the token carries no pin, and enrolling "
            "works over loopback only (or agent enroll --insecure); for a server started "
            "with --tls-self-signed, pass the same --state-dir (or --config) as the server",
            file=sys.stderr,
        )
    print(token)
    if config.operator_keys:
        listed = ", ".join(config.operator_keys)
        print(
            f"monitoring-ws token create: the token pins operator keys {listed}: agents that "
            "enroll with it run only commands those keys sign",
            file=sys.stderr,
        )
    # How an agent machine uses it (stderr: stdout stays the token alone, for scripts).
    curl = "curl -fsSL"
    if pin is not None:
        curl += f" -k --pinnedpubkey '{curl_pin(config.server, kept=True)}'"
    scheme = "https" if pin is not None else "http"
    print(
        f"install an agent with it (docs/install.md): {curl} {scheme}://SERVER:PORT/install.sh"
        f" | sudo MONITORING_WS_JOIN_TOKEN='{token}' sh",
        file=sys.stderr,
    )
    return 0
