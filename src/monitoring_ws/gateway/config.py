"""The websocket plugin's settings: ``[plugins.websocket]``, and the host's ``[server]``
and ``[cluster]`` as the host read them (docs/gateway.md)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs

from ..configbase import ConfigError
from ..configbase import one_of as _one_of
from ..configbase import positive as _positive
from ..host.config import ClusterSettings, MonitoringConfig, ServerSettings
from ..protocol.ed25519 import parse_public_key

__all__ = [
    "ConfigError",
    "GatewayConfig",
    "gateway_config",
    "gateway_config_of",
    "load_config",
    "own_keys",
]


@attrs.frozen
class GatewayConfig:
    """``[plugins.websocket]``'s own settings, with the host's ``[server]`` and
    ``[cluster]`` it reads (held, never copied: one source per setting)."""

    server: ServerSettings = attrs.field(factory=ServerSettings)
    cluster: ClusterSettings = attrs.field(factory=ClusterSettings)
    #: Master secrets, current first; empty means boto3's credential chain.
    master_secrets: tuple[str, ...] = attrs.field(default=(), repr=False)
    #: Fetch the master secret at start: ``secretsmanager:NAME`` or ``ssm:/parameter/name``.
    master_secret_from: str | None = None
    seed_compatible: bool = False
    heartbeat_interval_ms: int = attrs.field(default=30_000, validator=_positive)
    auth_timeout_ms: int = attrs.field(default=10_000, validator=_positive)
    max_frame_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    #: Frames queued for one agent before it counts as too slow and is closed.
    outgoing_queue: int = attrs.field(default=256, validator=_positive)
    #: The first frame's limit: read before the server knows who is speaking (1009).
    max_auth_frame_bytes: int = attrs.field(default=16 << 10, validator=_positive)
    #: Connections that have not authenticated yet, across all addresses.
    max_unauthenticated: int = attrs.field(default=2048, validator=_positive)
    #: ... and from one remote address.
    max_unauthenticated_per_address: int = attrs.field(default=256, validator=_positive)
    #: Failed first frames one agent id may have from one address per minute before 4429.
    auth_failures_per_minute: int = attrs.field(default=30, validator=_positive)
    #: Failed first frames one address may have per minute, whatever the agent ids.
    address_failures_per_minute: int = attrs.field(default=300, validator=_positive)
    #: Each agent's sustained messages and bytes per second, and how many seconds' worth
    #: may come at once (an outbox replayed after an outage); past them 4429.
    agent_messages_per_s: float = attrs.field(default=1000.0, validator=_positive)
    agent_bytes_per_s: float = attrs.field(default=float(8 << 20), validator=_positive)
    agent_burst_s: float = attrs.field(default=10.0, validator=_positive)
    #: JSON values one frame may hold, counted before parsing (1009): bounds the CPU one
    #: frame costs (~1 us a value) whatever its bytes are.
    max_frame_values: int = attrs.field(default=65_536, validator=_positive)
    #: Server time each agent's frames may take to read and verify, sustained, and how
    #: much may come at once: past it the agent is not read until it is paid back
    #: (backpressure, not a close), so one agent cannot take the event loop.
    agent_cpu_ms_per_s: float = attrs.field(default=25.0, validator=_positive)
    agent_cpu_burst_ms: float = attrs.field(default=100.0, validator=_positive)
    #: Agents refused (4401) and disconnected; re-read on SIGHUP without a restart.
    revoked_agents: tuple[str, ...] = ()
    #: An agent's session ends after this long (1001 with a retry hint; it reconnects),
    #: so that a rotated secret or a revocation reaches every agent.
    max_session_s: int = attrs.field(default=86_400, validator=_positive)
    #: Retry hint sent with 1001 at shutdown (agents add jitter).
    shutdown_retry_after_s: int = 5
    #: Finished command records are kept this long (state.sqlite3 in state_dir).
    command_retention_s: int = attrs.field(default=7 * 86_400, validator=_positive)
    #: Streamed command output (the ``output`` extension): the bytes a second each agent
    #: may send, apart from ``agent_bytes_per_s`` (agents pace themselves to it)...
    output_bytes_per_s: int = attrs.field(default=4 << 20, validator=_positive)
    #: ... the most kept of one command's output (the oldest goes first, and readers are
    #: told), and of all commands' (the oldest go first; checked each minute).
    output_window_bytes: int = attrs.field(default=8 << 20, validator=_positive)
    output_max_bytes: int = attrs.field(default=1 << 30, validator=_positive)
    #: Shells and tunnels (the ``channels`` extension, docs/sessions.md): offered to
    #: agents at all; each channel's window (bytes in flight each way); channels open on
    #: one agent and on this server; each agent's channel bytes a second (each data frame
    #: also counts 16 KiB, so tiny frames are paced too) and how many may come at once.
    channels: bool = True
    channel_window_bytes: int = attrs.field(default=1 << 20, validator=_positive)
    max_channels_per_agent: int = attrs.field(default=8, validator=_positive)
    max_channels: int = attrs.field(default=256, validator=_positive)
    channel_bytes_per_s: int = attrs.field(default=64 << 20, validator=_positive)
    channel_burst_bytes: int = attrs.field(default=8 << 20, validator=_positive)
    #: Accepted metrics and logs stay in the telemetry spool this long.
    telemetry_retention_s: int = attrs.field(default=86_400, validator=_positive)
    #: ... and while they take at most this much (the oldest go first; checked each minute).
    telemetry_max_bytes: int = attrs.field(default=1 << 30, validator=_positive)
    #: Writes to the state database are grouped; acks follow each commit.
    commit_interval_ms: int = attrs.field(default=20, validator=_positive)
    #: Acks are cumulative: each agent gets at most one per interval, covering every commit.
    ack_interval_ms: int = attrs.field(default=250, validator=_positive)
    #: SQLite's ``synchronous``: "normal" survives a crash of the process, "full" also a
    #: power cut (an fsync per commit).
    state_sync: str = attrs.field(default="normal", validator=_one_of("normal", "full"))
    #: Agent releases offered to install.sh and ``update`` (docs/install.md): a directory
    #: of ``<version>/`` with ``manifest.json`` and the artifact (default: ``releases`` in
    #: the state directory), and the Ed25519 public keys (``ed25519:<base64>``) they must
    #: be signed with. Agents receive these keys when they enroll.
    releases_dir: str | None = None
    release_keys: tuple[str, ...] = ()
    #: Operator keys (``ed25519:<base64>``) handed to agents that enroll, pinned by the
    #: join tokens made meanwhile; with them, agents run only operator-signed commands
    #: (``require_operator_signature``; docs/security.md, "Operator-signed commands").
    operator_keys: tuple[str, ...] = ()
    require_operator_signature: bool = True

    @property
    def releases_path(self) -> Path:
        if self.releases_dir is not None:
            return Path(self.releases_dir).expanduser()
        return self.server.state_dir / "releases"

    @property
    def state_file(self) -> Path:
        """The state database: one per worker when several share the state directory."""
        index = self.cluster.worker_index
        name = "state.sqlite3" if index is None else f"state-w{index}.sqlite3"
        return self.server.state_dir / name

    def check(self) -> None:
        """The gateway's own cross-field rules (the host checked ``[server]``); raises
        ``ConfigError`` with the fix."""
        for key in (*self.release_keys, *self.operator_keys):
            try:
                parse_public_key(key)
            except ValueError as exc:
                raise ConfigError(f"release_keys: {exc}") from None
        if self.agent_bytes_per_s * self.agent_burst_s < self.max_frame_bytes:
            raise ConfigError(
                "agent_bytes_per_s x agent_burst_s must be at least max_frame_bytes, or a "
                "frame of the largest allowed size could never pass the rate limit"
            )


_TUPLES = {"master_secrets", "revoked_agents", "release_keys", "operator_keys"}


def _coerce(name: str, value: Any) -> Any:
    if name in _TUPLES:
        if isinstance(value, str) or not isinstance(value, list | tuple):
            raise ConfigError(f"{name} must be a list of strings")
        return tuple(str(item) for item in value)
    return value


def own_keys() -> frozenset[str]:
    """The keys of ``[plugins.websocket]`` (besides ``enabled``)."""
    return frozenset(f.name for f in attrs.fields(GatewayConfig)) - {"server", "cluster"}


def load_config(
    server: ServerSettings | None = None,
    cluster: ClusterSettings | None = None,
    **settings: Any,
) -> GatewayConfig:
    """``[plugins.websocket]``'s table (None values skipped: the default stays) with the
    host's settings, checked; raises ``ConfigError`` naming what is wrong."""
    unknown = sorted(set(settings) - own_keys())
    if unknown:
        raise ConfigError(
            f"unknown key {', '.join(unknown)} (the websocket plugin's settings are listed "
            "in docs/gateway.md; listeners, TLS and tokens go in [server])"
        )
    values = {k: _coerce(k, v) for k, v in settings.items() if v is not None}
    try:
        config = GatewayConfig(
            server=server or ServerSettings(), cluster=cluster or ClusterSettings(), **values
        )
    except TypeError as exc:
        raise ConfigError(f"invalid setting: {exc}") from None
    config.check()
    return config


def gateway_config(
    settings: Mapping[str, Any], server_settings: ServerSettings, cluster: ClusterSettings
) -> GatewayConfig:
    """The gateway's settings: its own table, with ``[server]`` and ``[cluster]`` as the
    host read them. Raises ``ConfigError`` naming a key it does not know."""
    return load_config(server_settings, cluster, **settings)


def gateway_config_of(config: MonitoringConfig) -> GatewayConfig:
    """The websocket plugin's settings in a whole monitoring.toml."""
    return gateway_config(config.plugin_settings("websocket"), config.server, config.cluster)
