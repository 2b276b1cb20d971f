"""Where the master secret comes from: the config, else boto3's credential chain."""

from __future__ import annotations

import os

from .config import ConfigError, GatewayConfig

__all__ = ["SECRETS_ENV", "resolve_master_secrets"]

#: Comma-separated master secrets, current first (overrides boto3's chain).
SECRETS_ENV = "MONITORING_WS_MASTER_SECRETS"


def _from_boto3() -> str | None:
    import boto3  # noqa: PLC0415 - slow to import; only serve needs it

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        return None
    secret: str | None = credentials.get_frozen_credentials().secret_key
    return secret or None


def resolve_master_secrets(config: GatewayConfig) -> tuple[str, ...]:
    """Master secrets, current first; raises ``ConfigError`` saying how to provide one."""
    if config.master_secrets:
        return config.master_secrets
    from_env = tuple(s for s in os.environ.get(SECRETS_ENV, "").split(",") if s)
    if from_env:
        return from_env
    secret = _from_boto3()
    if secret:
        return (secret,)
    raise ConfigError(
        "no master secret: the server signs and verifies agents with the AWS secret access "
        "key from boto3's credential chain, and none was found. Provide one of: "
        "AWS_SECRET_ACCESS_KEY (with AWS_ACCESS_KEY_ID) in the environment, an AWS profile "
        f"(~/.aws/credentials), {SECRETS_ENV}=secret[,old-secret] in the environment, or "
        "master_secrets = [...] under [gateway] in the config file"
    )
