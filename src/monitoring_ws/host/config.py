"""The one settings file, ``monitoring.toml``: ``[server]``, ``[transports]``, ``[cluster]``
and ``[plugins.NAME]`` (docs/monitoring.example.toml).

An older ``[gateway]`` file is read through ``translate_legacy`` with a warning naming
where each key lives now. Any other unknown table or key is an error naming it and the
file; a plugin checks its own table when it is built.
"""

from __future__ import annotations

import ipaddress
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
from attrs import validators as v

from ..configbase import ConfigError, is_loopback, parse_hostport, path, positive, strings
from .tokens import ApiToken, parse_tokens

__all__ = [
    "API_TOKENS_ENV",
    "BUILT_IN_ENABLED",
    "ENABLE_ENV_PREFIX",
    "REDIS_URL_ENV",
    "ClusterSettings",
    "MonitoringConfig",
    "ServerSettings",
    "TransportSettings",
    "config_from_document",
    "load_monitoring_config",
    "translate_legacy",
]

#: ``MONITORING_WS_PLUGIN_<NAME>=on|off`` enables or disables a plugin over the file.
ENABLE_ENV_PREFIX = "MONITORING_WS_PLUGIN_"
#: Bearer tokens for the API, comma-separated (instead of ``[server] api_tokens``).
API_TOKENS_ENV = "MONITORING_WS_API_TOKENS"
#: The cluster's Redis URL (it may hold a password: the environment, not argv, carries it).
REDIS_URL_ENV = "MONITORING_WS_REDIS_URL"
#: Plugins that run unless ``[plugins.NAME] enabled = false``; others need ``true``.
BUILT_IN_ENABLED = frozenset({"websocket"})
_SWITCH = {"on": True, "true": True, "1": True, "off": False, "false": False, "0": False}


def _strings(value: Any) -> tuple[str, ...]:
    return strings("a list setting", value)


def _optional_path(value: Any) -> Path | None:
    return None if value is None else Path(value).expanduser()


def _host_names(value: Any) -> tuple[str, ...]:
    return tuple(name.lower().rstrip(".") for name in _strings(value))


_text = v.instance_of(str)
_optional_text = v.optional(_text)
_flag = v.instance_of(bool)
_number = [v.instance_of((int, float)), positive]
_count = [v.instance_of(int), positive]


@attrs.frozen
class ServerSettings:
    """``[server]``: the host's listeners, TLS, API access and state (docs/gateway.md)."""

    listen: str = attrs.field(default="127.0.0.1:4000", validator=_text)
    #: A second listener for agents only: the plugins' agent endpoints (``/agent``,
    #: ``/enroll``).
    agent_listen: str | None = attrs.field(default=None, validator=_optional_text)
    #: What serves ``agent_listen``: ``lean`` (trio streams and wsproto, host/lean.py) or
    #: ``hypercorn`` (as the main listener).
    agent_server: str = attrs.field(default="lean", validator=v.in_(("lean", "hypercorn")))
    #: What serves ``listen`` (the API, the dashboard; agents too without ``agent_listen``):
    #: ``hypercorn``, or ``lean`` (the same listener as ``agent_server``'s, kept alive).
    api_server: str = attrs.field(default="lean", validator=v.in_(("lean", "hypercorn")))
    state_dir: Path = attrs.field(default=Path(".monitoring-ws"), converter=path)
    tls_cert: Path | None = attrs.field(default=None, converter=_optional_path)
    tls_key: Path | None = attrs.field(default=None, converter=_optional_path)
    tls_self_signed: bool = attrs.field(default=False, validator=_flag)
    #: Extra names the self-signed certificate is valid for (besides localhost).
    tls_hostnames: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    #: Bearer tokens for /api (strings: every scope; tables: named and scoped, see
    #: host/tokens.py); required when the API listens beyond loopback.
    api_tokens: tuple[ApiToken, ...] = attrs.field(default=(), converter=parse_tokens, repr=False)
    #: Host names (besides loopback) the API answers to when no API token is configured.
    allowed_hosts: tuple[str, ...] = attrs.field(default=(), converter=_host_names)
    #: Proxies whose ``X-Forwarded-For`` names the caller (addresses or networks).
    trusted_proxies: tuple[str, ...] = attrs.field(default=(), converter=_strings)
    #: The address agents dial, for generated agent configs (default: IMDSv2's public IPv4).
    public_host: str | None = attrs.field(default=None, validator=_optional_text)
    imds_endpoint: str = attrs.field(default="http://169.254.169.254", validator=_text)
    tls_handshake_timeout_s: float = attrs.field(default=10.0, validator=_number)
    http_body_timeout_s: float = attrs.field(default=10.0, validator=_number)
    #: How long a command waits by default, and at most.
    default_command_timeout_ms: int = attrs.field(default=10_000, validator=_count)
    max_command_timeout_ms: int = attrs.field(default=3_600_000, validator=_count)
    #: Agents one job may match, and jobs running at once (docs/api.md, "Jobs").
    max_job_agents: int = attrs.field(default=100_000, validator=_count)
    max_running_jobs: int = attrs.field(default=16, validator=_count)
    #: A loopback listener serving ``GET /metrics`` without a token (Prometheus); worker
    #: i of ``workers`` serves on this port plus i.
    metrics_listen: str | None = attrs.field(default=None, validator=_optional_text)
    #: Export agents' latest CPU, memory, disk and load as gauges on /metrics (one series
    #: per agent and mount: mind the cardinality of a large fleet).
    agent_gauges: bool = attrs.field(default=False, validator=_flag)
    #: The audit log (JSON lines; default ``state_dir/audit.jsonl``), rotated past
    #: ``audit_max_bytes`` keeping ``audit_backups`` files.
    audit_log: Path | None = attrs.field(default=None, converter=_optional_path)
    audit_max_bytes: int = attrs.field(default=64 << 20, validator=_count)
    audit_backups: int = attrs.field(default=5, validator=[v.instance_of(int), v.ge(0)])
    #: Shell sessions are recorded (asciicast v2) in ``state_dir/recordings``: each up to
    #: ``recording_max_bytes``, all of them up to ``recordings_max_bytes`` (the oldest go).
    recording_max_bytes: int = attrs.field(default=64 << 20, validator=_count)
    recordings_max_bytes: int = attrs.field(default=1 << 30, validator=_count)
    #: The server's log level (debug, info, warning, error); SIGHUP applies a new one.
    log_level: str = attrs.field(
        default="info", validator=v.in_(("debug", "info", "warning", "error"))
    )
    #: Log lines the API keeps per agent (``GET /api/websocket/agents/:id/logs``).
    log_ring: int = attrs.field(default=200, validator=_count)

    @property
    def tls_enabled(self) -> bool:
        return self.tls_self_signed or self.tls_cert is not None

    def proxy_networks(self) -> tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...]:
        try:
            return tuple(ipaddress.ip_network(p, strict=False) for p in self.trusted_proxies)
        except ValueError as exc:
            raise ConfigError(f"trusted_proxies: {exc}") from None

    def check(self) -> None:
        """Cross-field rules; raises ``ConfigError`` with the fix."""
        host, _ = parse_hostport(self.listen, "listen")
        if self.agent_listen is not None:
            parse_hostport(self.agent_listen, "agent_listen")
        if self.metrics_listen is not None:
            metrics_host, _ = parse_hostport(self.metrics_listen, "metrics_listen")
            if not is_loopback(metrics_host):
                raise ConfigError(
                    f"metrics_listen {self.metrics_listen} is not loopback: it answers without "
                    "a token; scrape GET /metrics on listen with an API token instead"
                )
        if not is_loopback(host) and not self.api_tokens:
            raise ConfigError(
                f"the API would listen on {host}, beyond loopback, without a credential: "
                f"set [server] api_tokens (or {API_TOKENS_ENV}), or listen on 127.0.0.1 "
                "and use agent_listen for agents"
            )
        if (self.tls_cert is None) != (self.tls_key is None):
            raise ConfigError("tls_cert and tls_key go together: give both or neither")
        if self.tls_cert is not None and self.tls_self_signed:
            raise ConfigError("choose tls_cert/tls_key or tls_self_signed, not both")
        if self.default_command_timeout_ms > self.max_command_timeout_ms:
            raise ConfigError("default_command_timeout_ms is above max_command_timeout_ms")
        self.proxy_networks()


@attrs.frozen
class TransportSettings:
    """``[transports]``: the order the router tries, and SSM (docs/transports.md)."""

    order: tuple[str, ...] = attrs.field(default=("websocket", "ssm"), converter=_strings)
    #: Offer AWS SSM (boto3's chain gives region and credentials).
    ssm: bool = attrs.field(default=False, validator=_flag)
    ssm_safe_commands: tuple[str, ...] = attrs.field(default=("ping",), converter=_strings)
    ssm_shell_allowed: tuple[str, ...] = attrs.field(default=(), converter=_strings)


@attrs.frozen
class ClusterSettings:
    """``[cluster]``: several nodes (or ``workers`` processes) sharing one Redis."""

    redis_url: str | None = attrs.field(default=None, validator=_optional_text, repr=False)
    #: This node's name in listings (default host:pid, or host:w<i> for worker i).
    node_id: str | None = attrs.field(default=None, validator=_optional_text)
    #: Processes on this host sharing the listen port (needs ``redis_url``).
    workers: int = attrs.field(default=1, validator=_count)
    #: When Redis stops answering nonce checks, a node's own window decides this long.
    replay_fail_open_s: float = attrs.field(default=30.0, validator=v.instance_of((int, float)))
    #: Set by ``serve --workers`` in each worker process (not a file setting).
    worker_index: int | None = attrs.field(default=None, validator=v.optional(v.instance_of(int)))

    def check(self) -> None:
        if self.workers > 1 and self.redis_url is None:
            raise ConfigError(
                f"workers = {self.workers} needs Redis, which is how the workers share agents: "
                "set [cluster] redis_url (or --redis-url), or run one process"
            )


_SECTIONS: dict[str, type[Any]] = {
    "server": ServerSettings,
    "transports": TransportSettings,
    "cluster": ClusterSettings,
}
_KEYS = {name: {f.name for f in attrs.fields(cls)} for name, cls in _SECTIONS.items()}
_KEYS["cluster"].discard("worker_index")
#: Where the old flat ``[gateway]`` keys live now (the rest go to ``[plugins.websocket]``).
_LEGACY = {
    **{key: ("server", key) for key in _KEYS["server"]},
    **{key: ("cluster", key) for key in _KEYS["cluster"] - {"workers"}},
    "transport_order": ("transports", "order"),
    "ssm": ("transports", "ssm"),
    "ssm_safe_commands": ("transports", "ssm_safe_commands"),
    "ssm_shell_allowed": ("transports", "ssm_shell_allowed"),
}


@attrs.frozen
class MonitoringConfig:
    """The whole file, checked; ``plugins`` holds each plugin's table as written."""

    server: ServerSettings = attrs.field(factory=ServerSettings)
    transports: TransportSettings = attrs.field(factory=TransportSettings)
    cluster: ClusterSettings = attrs.field(factory=ClusterSettings)
    plugins: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    #: The file it came from (None: defaults and flags only).
    source: Path | None = None
    #: How messages name it (the file's path).
    where: str = "settings"
    #: What ``translate_legacy`` moved, to be logged at start.
    warnings: tuple[str, ...] = ()

    def enabled(self, name: str) -> bool:
        """Whether plugin ``name`` runs (``websocket`` unless disabled, ``ssm`` when
        ``[transports] ssm = true``; others if enabled)."""
        default = self.transports.ssm if name == "ssm" else name in BUILT_IN_ENABLED
        value = self.plugins.get(name, {}).get("enabled", default)
        if not isinstance(value, bool):
            raise ConfigError(f"[plugins.{name}] enabled must be true or false, got {value!r}")
        return value

    def plugin_settings(self, name: str) -> dict[str, Any]:
        """Plugin ``name``'s own settings (its table without ``enabled``)."""
        return {k: val for k, val in self.plugins.get(name, {}).items() if k != "enabled"}


def translate_legacy(document: Mapping[str, Any], where: str) -> tuple[dict[str, Any], list[str]]:
    """The new shape of a file that uses the old one (a ``[gateway]`` table, or server,
    cluster or transport keys under ``[plugins.websocket]``), and a warning per move."""
    new: dict[str, Any] = {
        name: dict(table) if isinstance(table, dict) else table for name, table in document.items()
    }
    plugins = new.setdefault("plugins", {})
    if not isinstance(plugins, dict):
        raise ConfigError(f"{where}: [plugins.NAME] must be tables")
    warnings = []
    sources: list[tuple[str, dict[str, Any]]] = []
    if "gateway" in new:
        gateway = new.pop("gateway")
        if not isinstance(gateway, dict):
            raise ConfigError(f"{where}: [gateway] must be a table")
        sources.append(("[gateway]", gateway))
        websocket = plugins.setdefault("websocket", {})
        if not isinstance(websocket, dict):
            raise ConfigError(f"{where}: [plugins.websocket] must be a table")
    if isinstance(plugins.get("websocket"), dict):
        table = plugins["websocket"]
        movable = {k: table.pop(k) for k in list(table) if k in _LEGACY}
        if movable:
            sources.append(("[plugins.websocket]", movable))
    for label, table in sources:
        moved = []
        for key, value in table.items():
            section, new_key = _LEGACY.get(key, ("plugins.websocket", key))
            target = new.setdefault(section, {}) if "." not in section else plugins["websocket"]
            if new_key in target:
                raise ConfigError(f"{where}: {key} is set both in {label} and in [{section}]")
            target[new_key] = value
            moved.append(f"{key} -> [{section}] {new_key}")
        if moved:
            warnings.append(
                f"{where}: {label} is the old shape; move each key: " + ", ".join(sorted(moved))
            )
    return new, warnings


def _section(cls: type[Any], table: Any, name: str, where: str) -> Any:
    if not isinstance(table, dict):
        raise ConfigError(f"{where}: [{name}] must be a table")
    unknown = sorted(set(table) - _KEYS[name])
    if unknown:
        raise ConfigError(
            f"{where}: unknown key {', '.join(unknown)} in [{name}] "
            f"(known: {', '.join(sorted(_KEYS[name]))})"
        )
    try:
        return cls(**table)
    except ConfigError as exc:
        raise ConfigError(f"{where}: [{name}] {exc}") from None
    except (TypeError, ValueError) as exc:
        detail = exc.args[0] if exc.args else exc  # attrs: (message, attribute, type, value)
        raise ConfigError(f"{where}: [{name}] {detail}") from None


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None


def load_monitoring_config(
    path: Path | None,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
) -> MonitoringConfig:
    """Defaults, then the file, then ``overrides`` (``{"server": {...}, ...}``; None values
    are ignored), then the environment's plugin switches. Raises ``ConfigError``."""
    where = str(path) if path is not None else "settings"
    document = _read(path) if path is not None else {}
    return config_from_document(document, where, overrides, environ, source=path)


def config_from_document(
    document: Mapping[str, Any],
    where: str,
    overrides: Mapping[str, Mapping[str, Any]] | None = None,
    environ: Mapping[str, str] | None = None,
    *,
    source: Path | None = None,
) -> MonitoringConfig:
    """``load_monitoring_config`` for a document already parsed (or built in code)."""
    new, warnings = translate_legacy(document, where)
    unknown = sorted(set(new) - {*_SECTIONS, "plugins"})
    if unknown:
        raise ConfigError(
            f"{where}: unknown table [{', '.join(unknown)}] "
            "(known: [server], [transports], [cluster], [plugins.NAME])"
        )
    worker_index = None
    for section, values in (overrides or {}).items():
        table = new.setdefault(section, {})
        table.update({k: val for k, val in values.items() if val is not None})
        if section == "cluster":  # set by ``serve --workers`` only, never in a file
            worker_index = table.pop("worker_index", None)
    plugins = new.get("plugins", {})
    if not all(isinstance(table, dict) for table in plugins.values()):
        raise ConfigError(f"{where}: [plugins.NAME] must be tables")
    for variable, value in (os.environ if environ is None else environ).items():
        if variable.startswith(ENABLE_ENV_PREFIX):
            name = variable.removeprefix(ENABLE_ENV_PREFIX).lower()
            if value.lower() not in _SWITCH:
                raise ConfigError(f"{variable} must be on or off, got {value!r}")
            plugins.setdefault(name, {})["enabled"] = _SWITCH[value.lower()]
    sections = {
        name: _section(cls, new.get(name, {}), name, where) for name, cls in _SECTIONS.items()
    }
    sections["cluster"] = attrs.evolve(sections["cluster"], worker_index=worker_index)
    config = MonitoringConfig(
        plugins=plugins, source=source, where=where, warnings=tuple(warnings), **sections
    )
    try:
        config.server.check()
        config.cluster.check()
        for name in plugins:
            config.enabled(name)
    except ConfigError as exc:
        raise ConfigError(f"{where}: {exc}") from None
    return config
