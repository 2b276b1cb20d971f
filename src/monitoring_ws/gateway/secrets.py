"""Where the master secret comes from: the config, the environment, a secret store named
in the config (AWS Secrets Manager or SSM Parameter Store), else boto3's credential chain."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from .config import ConfigError, GatewayConfig

__all__ = ["CREDENTIAL_NAME", "SECRETS_ENV", "fetch_secret", "resolve_master_secrets"]

#: Comma-separated master secrets, current first (overrides boto3's chain).
SECRETS_ENV = "MONITORING_WS_MASTER_SECRETS"
#: The systemd credential (``LoadCredential=NAME:FILE``) read when the variable is unset.
CREDENTIAL_NAME = "monitoring-ws-master-secrets"
_HOW = (
    f"{SECRETS_ENV}=secret[,old-secret] in the environment, systemd's "
    f"LoadCredential={CREDENTIAL_NAME}:FILE (one secret a line), "
    "master_secrets = [...] in the config file, or master_secret_from = "
    '"secretsmanager:NAME" or "ssm:/parameter/name" to fetch one at start'
)


def _from_boto3() -> str | None:
    import boto3  # noqa: PLC0415 - slow to import; only serve needs it

    credentials = boto3.Session().get_credentials()
    if credentials is None:
        return None
    frozen = credentials.get_frozen_credentials()
    if frozen.token:
        # A session token means temporary credentials (instance role, SSO, assumed role):
        # their secret key changes within hours, and every agent would then fail with 4401.
        raise ConfigError(
            "the AWS credentials boto3 found are temporary (they carry a session token: an "
            "instance role, SSO or an assumed role), so their secret key would change under "
            f"the agents. Set a lasting master secret instead: {_HOW}"
        )
    secret: str | None = frozen.secret_key
    return secret or None


def _from_systemd_credential() -> tuple[str, ...]:
    """Secrets, one a line (current first), from systemd's ``LoadCredential=`` file
    ``monitoring-ws-master-secrets``: readable by a ``DynamicUser=`` service, never in
    its environment or argv."""
    directory = os.environ.get("CREDENTIALS_DIRECTORY")
    if not directory:
        return ()
    path = Path(directory) / CREDENTIAL_NAME
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return ()
    except OSError as exc:
        raise ConfigError(f"cannot read the master secrets credential {path}: {exc}") from None
    return tuple(line.strip() for line in text.splitlines() if line.strip())


def fetch_secret(source: str) -> str:
    """The secret a ``master_secret_from`` value names, fetched through boto3.

    Raises ``ConfigError`` saying what failed (never the secret)."""
    import boto3  # noqa: PLC0415
    from botocore.exceptions import BotoCoreError, ClientError  # noqa: PLC0415

    kind, _, name = source.partition(":")
    try:
        if kind == "secretsmanager" and name:
            answer: Any = boto3.client("secretsmanager").get_secret_value(SecretId=name)
            value = answer.get("SecretString")
        elif kind == "ssm" and name:
            answer = boto3.client("ssm").get_parameter(Name=name, WithDecryption=True)
            value = answer["Parameter"]["Value"]
        else:
            raise ConfigError(
                f"master_secret_from must be secretsmanager:NAME or ssm:/parameter/name, "
                f"got {source!r}"
            )
    except (BotoCoreError, ClientError) as exc:
        raise ConfigError(f"cannot fetch the master secret from {source}: {exc}") from None
    if not isinstance(value, str) or not value:
        raise ConfigError(f"{source} holds no text secret (binary secrets are not supported)")
    return value


def resolve_master_secrets(config: GatewayConfig) -> tuple[str, ...]:
    """Master secrets, current first; raises ``ConfigError`` saying how to provide one."""
    if config.master_secrets:
        return config.master_secrets
    from_env = tuple(s for s in os.environ.get(SECRETS_ENV, "").split(",") if s)
    if from_env:
        return from_env
    from_credential = _from_systemd_credential()
    if from_credential:
        return from_credential
    if config.master_secret_from is not None:
        return (fetch_secret(config.master_secret_from),)
    secret = _from_boto3()
    if secret:
        return (secret,)
    raise ConfigError(
        "no master secret: the server signs and verifies agents with the AWS secret access "
        "key from boto3's credential chain, and none was found. Provide one of: "
        "AWS_SECRET_ACCESS_KEY (with AWS_ACCESS_KEY_ID, a lasting IAM user key) in the "
        f"environment, an AWS profile (~/.aws/credentials), {_HOW}"
    )
