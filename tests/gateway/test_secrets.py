"""The master secret: temporary AWS credentials refused, secret stores read through boto3."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import boto3
import pytest

from monitoring_ws.gateway.config import ConfigError, GatewayConfig
from monitoring_ws.gateway.secrets import SECRETS_ENV, resolve_master_secrets

from ..conftest import moto_server


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[str]:
    """moto's server on loopback for Secrets Manager and SSM, and no other credentials."""
    for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "CREDENTIALS_DIRECTORY", SECRETS_ENV):
        monkeypatch.delenv(name, raising=False)
    with moto_server() as endpoint:
        monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
        monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
        monkeypatch.setenv("AWS_ENDPOINT_URL", endpoint)
        monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIAEXAMPLE")
        monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "static-user-secret")
        monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield endpoint


def test_static_iam_keys_still_work(aws: str) -> None:
    assert resolve_master_secrets(GatewayConfig()) == ("static-user-secret",)


def test_temporary_credentials_are_refused_with_the_fix(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")
    with pytest.raises(ConfigError, match="temporary") as caught:
        resolve_master_secrets(GatewayConfig())
    message = str(caught.value)
    assert SECRETS_ENV in message
    assert "secretsmanager:NAME" in message
    assert "static-user-secret" not in message
    # Given a lasting secret, temporary credentials are fine (they still reach AWS).
    monkeypatch.setenv(SECRETS_ENV, "lasting,older")
    assert resolve_master_secrets(GatewayConfig()) == ("lasting", "older")


def test_secret_fetched_from_secrets_manager_and_parameter_store(
    aws: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    boto3.client("secretsmanager").create_secret(Name="mws/master", SecretString="from-sm")
    boto3.client("ssm").put_parameter(
        Name="/mws/master", Value="from-ssm", Type="SecureString", Overwrite=True
    )
    # Works with temporary credentials too: the secret itself is lasting.
    monkeypatch.setenv("AWS_SESSION_TOKEN", "a-session-token")
    config = GatewayConfig(master_secret_from="secretsmanager:mws/master")
    assert resolve_master_secrets(config) == ("from-sm",)
    config = GatewayConfig(master_secret_from="ssm:/mws/master")
    assert resolve_master_secrets(config) == ("from-ssm",)
    with pytest.raises(ConfigError, match="cannot fetch the master secret from ssm:/missing"):
        resolve_master_secrets(GatewayConfig(master_secret_from="ssm:/missing"))
    with pytest.raises(ConfigError, match="must be secretsmanager:NAME"):
        resolve_master_secrets(GatewayConfig(master_secret_from="vault:x"))


def test_a_systemd_credential_holds_the_secrets(
    aws: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    (tmp_path / "monitoring-ws-master-secrets").write_text("current\nprevious\n\n")
    monkeypatch.setenv("CREDENTIALS_DIRECTORY", str(tmp_path))
    monkeypatch.setenv("AWS_SESSION_TOKEN", "temporary: not needed then")
    assert resolve_master_secrets(GatewayConfig()) == ("current", "previous")
    monkeypatch.setenv(SECRETS_ENV, "from-env")  # the environment comes first
    assert resolve_master_secrets(GatewayConfig()) == ("from-env",)
