"""Agent settings: the seed's JSON file, environment variables, then flags (docs/agent.md)."""

from __future__ import annotations

import json
import os
import re
import socket
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

from ..allowlist import AllowList, AllowListError
from ..configbase import is_loopback
from ..imds import IMDS_ENDPOINT, imds_get
from ..protocol import AGENT_ID, derive_agent_key, parse_agent_key
from ..protocol.ed25519 import parse_public_key
from ..protocol.labels import LabelError, check_labels
from .channel_settings import (
    ChannelSettingsError,
    SessionSettings,
    TunnelSettings,
    parse_sessions,
    parse_tunnels,
)

__all__ = [
    "AgentSettings",
    "SettingsError",
    "default_state_dir",
    "hostname_agent_id",
    "imds_instance_id",
    "load_settings",
]

_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
_PROXY_VARIABLES = frozenset({"HTTPS_PROXY", "HTTP_PROXY", "ALL_PROXY", "NO_PROXY"})
EC2_INSTANCE_ID = re.compile(r"i-[0-9a-f]{8,17}")
_ENV = {
    "wsApiUrl": "MONITORING_WS_URL",
    "wsSecret": "MONITORING_WS_SECRET",
    "wsAgentKey": "MONITORING_WS_AGENT_KEY",
    "agentId": "MONITORING_WS_AGENT_ID",
    "wsCertSha256": "MONITORING_WS_CERT_SHA256",
    "stateDir": "MONITORING_WS_AGENT_STATE_DIR",
}


class SettingsError(ValueError):
    """A setting is missing or wrong; the message says how to fix it."""


def _allow_list(entries: AllowList | Iterable[str]) -> AllowList:
    return entries if isinstance(entries, AllowList) else AllowList.parse(entries)


@attrs.frozen
class AgentSettings:
    """Everything the agent runs with."""

    url: str
    agent_id: str
    key: bytes = attrs.field(repr=False)
    #: The EC2 instance id, when the agent runs on one (advertised in ``auth``).
    instance_id: str | None = None
    cert_sha256: str | None = None
    insecure: bool = False
    metrics_interval_s: float = 10.0
    log_files: tuple[Path, ...] = ()
    log_batch_interval_s: float = 2.0
    #: ``run`` executes only command lines an entry allows, word for word (allowlist.py).
    allowed_commands: AllowList = attrs.field(factory=AllowList, converter=_allow_list)
    #: Environment variables ``run`` passes to its children besides PATH and LANG.
    run_environment: tuple[str, ...] = ()
    command_concurrency: int = 4
    #: Command output kept, per stream (SSM stops at 24,000 characters).
    output_cap_bytes: int = 1 << 20
    backoff_base_s: float = 1.0
    backoff_cap_s: float = 60.0
    connect_timeout_s: float = 10.0
    #: Where the outbox file lives; None keeps the outbox in memory (lost on restart).
    state_dir: Path | None = None
    #: Bounds of the outbox: past either, the oldest messages go first (counted, logged).
    outbox_max_bytes: int = 64 << 20
    outbox_max_age_s: float = 7 * 86_400.0
    #: The agent's own labels (``"labels"``: ``{"env": "prod"}``), sorted pairs; sent in
    #: ``auth`` to servers that speak the ``labels`` feature.
    labels: tuple[tuple[str, str], ...] = ()
    #: Interactive shells (``"sessions"``) and TCP tunnels (``"tunnels"``): off by default.
    sessions: SessionSettings = attrs.field(factory=SessionSettings)
    tunnels: TunnelSettings = attrs.field(factory=TunnelSettings)
    #: Ed25519 keys agent releases must be signed with (``update``; docs/install.md).
    release_keys: tuple[bytes, ...] = ()
    #: Operator keys whose signed intents this agent trusts, the commands that need one
    #: (``None``: all of them), and how many signatures a command needs (default 1).
    operator_keys: tuple[bytes, ...] = ()
    signed_commands: frozenset[str] | None = frozenset()
    operator_quorum: Mapping[str, int] = attrs.field(factory=dict)

    def requires_signature(self, command: str) -> bool:
        return self.signed_commands is None or command in self.signed_commands

    @property
    def outbox_path(self) -> Path | None:
        """One file per agent id, so several agents can share a state directory."""
        if self.state_dir is None:
            return None
        return self.state_dir / f"outbox-{self.agent_id}.sqlite3"

    def child_environment(self) -> dict[str, str]:
        """What ``run``'s children get: PATH, LANG and the listed names, nothing else (not
        the agent's key, not proxy credentials)."""
        environment = {"PATH": os.environ.get("PATH") or _DEFAULT_PATH}
        environment["LANG"] = os.environ.get("LANG") or "C.UTF-8"
        for name in self.run_environment:
            if name in os.environ:
                environment[name] = os.environ[name]
        return environment


def _check_run_environment(names: Any) -> tuple[str, ...]:
    if not isinstance(names, list) or not all(isinstance(n, str) and n for n in names):
        raise SettingsError("runEnvironment must be a list of variable names")
    for name in names:
        if name.upper().startswith("MONITORING_WS_") or name.upper() in _PROXY_VARIABLES:
            raise SettingsError(
                f"runEnvironment: {name} holds the agent's secrets or proxy credentials and "
                "is never passed to commands"
            )
    return tuple(names)


def default_state_dir() -> Path:
    """systemd's ``StateDirectory=`` when set, else ``~/.local/state/monitoring-ws-agent``."""
    systemd = os.environ.get("STATE_DIRECTORY")
    if systemd:
        return Path(systemd.split(":")[0])
    return Path("~/.local/state/monitoring-ws-agent").expanduser()


def imds_instance_id(imds_endpoint: str = IMDS_ENDPOINT, timeout_s: float = 1.0) -> str | None:
    """The EC2 instance id from IMDSv2, or None when it does not answer within the timeout."""
    instance_id = imds_get("meta-data/instance-id", imds_endpoint, timeout_s)
    return instance_id if instance_id and AGENT_ID.fullmatch(instance_id) else None


def hostname_agent_id() -> str:
    """The host name, in the agentId alphabet."""
    hostname = re.sub(r"[^A-Za-z0-9._:-]", "-", socket.gethostname())[:128] or "agent"
    return hostname if AGENT_ID.fullmatch(hostname) else f"h{hostname}"[:128]


def _allowed_commands(entries: Any) -> AllowList:
    if not isinstance(entries, list) or not all(isinstance(e, str) for e in entries):
        raise SettingsError("allowedCommands must be a list of command lines")
    try:
        return AllowList.parse(entries)
    except AllowListError as exc:
        raise SettingsError(f"allowedCommands: {exc}") from None


def _release_keys(value: Any) -> tuple[bytes, ...]:
    if not isinstance(value, list):
        raise SettingsError('releaseKeys must be a list of "ed25519:<base64>" public keys')
    try:
        return tuple(parse_public_key(key) for key in value)
    except ValueError as exc:
        raise SettingsError(f"releaseKeys: {exc}") from None


def _operator_options(values: dict[str, Any]) -> dict[str, Any]:
    keys = values.get("operatorKeys", [])
    required = values.get("requireOperatorSignature", False)
    quorum = values.get("operatorQuorum", {})
    if not isinstance(keys, list):
        raise SettingsError('operatorKeys must be a list of "ed25519:<base64>" public keys')
    try:
        parsed = tuple(parse_public_key(key) for key in keys)
    except ValueError as exc:
        raise SettingsError(f"operatorKeys: {exc}") from None
    if isinstance(required, bool):
        signed: frozenset[str] | None = None if required else frozenset()
    elif isinstance(required, list) and all(isinstance(c, str) for c in required):
        signed = frozenset(required)
    else:
        raise SettingsError("requireOperatorSignature is true, false or a list of command names")
    if (signed is None or signed) and not parsed:
        raise SettingsError(
            "requireOperatorSignature needs operatorKeys: the public keys of the operators "
            "(`monitoring-ws ctl keys create NAME` prints one)"
        )
    if not isinstance(quorum, dict) or not all(
        isinstance(n, int) and not isinstance(n, bool) and 1 <= n <= len(parsed)
        for n in quorum.values()
    ):
        raise SettingsError(
            "operatorQuorum maps command names to how many operator signatures they need "
            "(1 to the number of operatorKeys)"
        )
    return {"operator_keys": parsed, "signed_commands": signed, "operator_quorum": quorum}


def _labels(value: Any) -> tuple[tuple[str, str], ...]:
    try:
        return tuple(sorted(check_labels(value).items()))
    except LabelError as exc:
        raise SettingsError(f"labels: {exc}") from None


def _channel_options(values: dict[str, Any]) -> dict[str, Any]:
    try:
        return {
            "sessions": parse_sessions(values.get("sessions")),
            "tunnels": parse_tunnels(values.get("tunnels")),
        }
    except ChannelSettingsError as exc:
        raise SettingsError(str(exc)) from None


def load_settings(path: Path | None, **flags: Any) -> AgentSettings:
    """Settings from the JSON file, then ``MONITORING_WS_*`` variables, then flags."""
    values: dict[str, Any] = {}
    if path is not None:
        try:
            values = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise SettingsError(f"cannot read {path}: {exc}") from None
        if not isinstance(values, dict):
            raise SettingsError(f"{path} must hold a JSON object")
    for name, variable in _ENV.items():
        if os.environ.get(variable):
            values[name] = os.environ[variable]
    values.update({k: v for k, v in flags.items() if v is not None})

    url = values.get("wsApiUrl")
    if not url:
        raise SettingsError("no server URL: set wsApiUrl in the config file or --url")
    if "{" in url or "}" in url:
        raise SettingsError(
            f"wsApiUrl {url!r} still holds a placeholder: put the server's address there "
            "(`monitoring-ws agent-config` on the server fills it in)"
        )
    parts = urlsplit(url)
    if parts.scheme not in {"ws", "wss"} or not parts.hostname:
        raise SettingsError(f"wsApiUrl must be ws:// or wss:// with a host, got {url!r}")
    insecure = bool(values.get("insecure", False))
    if parts.scheme == "ws" and not is_loopback(parts.hostname) and not insecure:
        raise SettingsError(
            "plain ws:// sends agent traffic unencrypted: use wss://, or --insecure "
            "if you really mean it (only loopback is allowed without it)"
        )
    agent_id = values.get("agentId")
    instance_id = None
    if agent_id is None:
        instance_id = imds_instance_id(values.get("imdsEndpoint", IMDS_ENDPOINT))
        agent_id = instance_id or hostname_agent_id()
    elif EC2_INSTANCE_ID.fullmatch(agent_id):
        instance_id = agent_id
    if not AGENT_ID.fullmatch(agent_id):
        raise SettingsError(f"invalid agentId {agent_id!r}: 1-128 chars of [A-Za-z0-9._:-]")
    if values.get("wsAgentKey"):
        try:
            key = parse_agent_key(values["wsAgentKey"])
        except ValueError as exc:
            raise SettingsError(f"wsAgentKey: {exc}") from None
    elif values.get("wsSecret"):
        key = derive_agent_key(values["wsSecret"], agent_id)
    else:
        raise SettingsError(
            "no key: set wsAgentKey (from `monitoring-ws derive-key AGENT_ID` on the server) "
            "or wsSecret in the config file, or MONITORING_WS_AGENT_KEY"
        )
    pin = values.get("wsCertSha256")
    if pin is not None:
        pin = pin.replace(":", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise SettingsError("wsCertSha256 must be 64 hex digits (colons allowed)")
    options = {
        "metrics_interval_s": values.get("metricsIntervalS", 10.0),
        "log_files": tuple(Path(p) for p in values.get("logFiles", ())),
        "allowed_commands": _allowed_commands(values.get("allowedCommands", [])),
        "run_environment": _check_run_environment(values.get("runEnvironment", [])),
        "backoff_base_s": values.get("backoffBaseS", 1.0),
        "backoff_cap_s": values.get("backoffCapS", 60.0),
        "command_concurrency": values.get("commandConcurrency", 4),
        "state_dir": Path(values.get("stateDir") or default_state_dir()).expanduser(),
        "outbox_max_bytes": values.get("outboxMaxBytes", 64 << 20),
        "outbox_max_age_s": values.get("outboxMaxAgeS", 7 * 86_400.0),
        "labels": _labels(values.get("labels", {})),
        "release_keys": _release_keys(values.get("releaseKeys", [])),
    }
    options.update(_channel_options(values))
    options.update(_operator_options(values))
    return AgentSettings(
        url=url,
        agent_id=agent_id,
        key=key,
        instance_id=instance_id,
        cert_sha256=pin,
        insecure=insecure,
        **options,
    )
