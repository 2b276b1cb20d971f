"""Agent configuration files: what an agent needs to connect (docs/gateway.md)."""

from __future__ import annotations

import logging
from typing import Any

from ..configbase import parse_hostport
from ..host.config import ServerSettings
from ..host.serving.tls import certificate_fingerprint, public_key_pin
from ..imds import IMDS_ENDPOINT, imds_get
from ..protocol import AGENT_ID, derive_agent_key

__all__ = ["IMDS_ENDPOINT", "agent_config", "certificate_pin", "public_ipv4"]

log = logging.getLogger("monitoring_ws.gateway")


def public_ipv4(imds_endpoint: str = IMDS_ENDPOINT, timeout_s: float = 1.0) -> str | None:
    """This instance's public IPv4 from IMDSv2, or None when IMDS does not answer."""
    return imds_get("meta-data/public-ipv4", imds_endpoint, timeout_s)


def certificate_pin(server: ServerSettings, *, kept: bool = False) -> str | None:
    """The SHA-256 of the certificate agents are served, or None without TLS. ``kept``:
    also when the settings do not say ``tls_self_signed`` but the state directory holds
    the certificate a ``serve --tls-self-signed`` made there (a command run beside the
    server with only ``--state-dir`` then pins what the server serves)."""
    if server.tls_cert is not None:
        return certificate_fingerprint(server.tls_cert)
    cert = server.state_dir / "tls" / "cert.pem"
    if (server.tls_self_signed or kept) and cert.is_file():
        return certificate_fingerprint(cert)
    return None


def curl_pin(server: ServerSettings, *, kept: bool = False) -> str:
    """curl's ``--pinnedpubkey`` for the certificate served (install.sh), "" without TLS
    (``kept`` as for ``certificate_pin``)."""
    cert = server.tls_cert
    if cert is None and (server.tls_self_signed or kept):
        cert = server.state_dir / "tls" / "cert.pem"
    return public_key_pin(cert) if cert is not None and cert.is_file() else ""


def agent_config(
    server: ServerSettings,
    master_secret: str | bytes,
    agent_id: str,
    *,
    public_host: str | None = None,
    seed_compatible: bool = False,
    imds_endpoint: str | None = None,
) -> dict[str, Any]:
    """The agent's JSON settings: hardened (its derived key) unless ``seed_compatible``."""
    if not AGENT_ID.fullmatch(agent_id):
        raise ValueError(f"invalid agent id {agent_id!r}: 1-128 chars of [A-Za-z0-9._:-]")
    listen = server.agent_listen or server.listen
    _, port = parse_hostport(listen, "agent_listen")
    host = (
        public_host
        or server.public_host
        or public_ipv4(imds_endpoint or server.imds_endpoint)
        or "{public_ip}"
    )
    scheme = "wss" if server.tls_enabled else "ws"
    default_port = 443 if scheme == "wss" else 80
    authority = host if port == default_port else f"{host}:{port}"
    settings: dict[str, Any] = {"agentId": agent_id, "wsApiUrl": f"{scheme}://{authority}/agent"}
    if seed_compatible:
        log.warning(
            "agent config for %s carries the master secret (seed-compatible): an agent holding "
            "it can sign as any agent; prefer the default, which carries only its own key",
            agent_id,
        )
        secret = master_secret.decode() if isinstance(master_secret, bytes) else master_secret
        settings["wsSecret"] = secret
    else:
        settings["wsAgentKey"] = derive_agent_key(master_secret, agent_id).hex()
    fingerprint = certificate_pin(server)
    if fingerprint is not None:
        settings["wsCertSha256"] = fingerprint
    return settings
