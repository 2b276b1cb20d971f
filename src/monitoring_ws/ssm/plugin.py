"""The ``ssm`` plugin: SSM arrives as every transport does, through the plugin entry
points. Enabled by ``[transports] ssm = true`` (as before it was a plugin); its settings
are ``ssm_safe_commands`` and ``ssm_shell_allowed`` in ``[transports]``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..configbase import ConfigError
from ..host.config import TransportSettings
from ..host.plugins import PluginBase, PluginContext
from ..transports import Transport
from .transport import SSMPolicy, SSMTransport

__all__ = ["SSMPlugin"]


def _policy(settings: Mapping[str, Any], transports: TransportSettings) -> SSMPolicy:
    if settings:
        unknown = ", ".join(sorted(settings))
        raise ConfigError(
            f"unknown key {unknown} (SSM's settings are ssm_safe_commands and "
            "ssm_shell_allowed in [transports])"
        )
    try:
        return SSMPolicy.from_settings(transports.ssm_safe_commands, transports.ssm_shell_allowed)
    except ValueError as exc:
        raise ConfigError(f"[transports] {exc}") from None


class SSMPlugin(PluginBase):
    """Contributes the ``ssm`` transport; boto3 is imported only when it is enabled."""

    name = "ssm"

    def __init__(self, settings: Mapping[str, Any], context: PluginContext) -> None:
        self.transport = SSMTransport(policy=_policy(settings, context.transports))

    @staticmethod
    def validate(settings: Mapping[str, Any], context: PluginContext) -> None:
        """``monitoring-ws config check``: the policy parses."""
        _policy(settings, context.transports)

    def transports(self) -> Sequence[Transport]:
        return (self.transport,)
