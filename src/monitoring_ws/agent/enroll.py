"""``monitoring-ws agent enroll``: trade a join token for this agent's key (docs/agent.md,
"Enrolling"). Over TLS the server must present the certificate the token pins before the
token is sent; plain HTTP only to loopback."""

from __future__ import annotations

import http.client
import json
import ssl
from typing import Any
from urllib.parse import urlsplit

from ..configbase import is_loopback
from ..protocol.jointoken import keyset_fingerprint, parse_join_token
from .https import PinError, open_connection

__all__ = ["EnrollError", "enroll"]

TIMEOUT_S = 15.0


class EnrollError(Exception):
    """Enrolling failed; the message says why and what to do."""


def enroll(url: str, token_text: str, agent_id: str, *, insecure: bool = False) -> dict[str, Any]:
    """The agent's settings (agentId, wsApiUrl, wsAgentKey, wsCertSha256 when pinned,
    releaseKeys when the server signs agent releases)."""
    try:
        token = parse_join_token(token_text)
    except ValueError as exc:
        raise EnrollError(str(exc)) from None
    parts = urlsplit(url)
    host = parts.hostname
    if parts.scheme not in {"https", "http"} or not host:
        raise EnrollError(f"--url must be https://HOST[:PORT] (the server's agent address): {url}")
    if parts.scheme == "http" and not (is_loopback(host) or insecure):
        raise EnrollError(
            "the token would cross the network in clear: use https:// (or --insecure)"
        )
    where = f"{host}:{parts.port or (443 if parts.scheme == 'https' else 80)}"
    try:
        connection = open_connection(url, token.pin, insecure=insecure, timeout_s=TIMEOUT_S)
    except PinError as exc:
        raise EnrollError(str(exc).replace("pinned one", "one the join token pins")) from None
    except OSError as exc:
        raise EnrollError(f"cannot enroll at {where}: {exc}") from None
    try:
        body = json.dumps({"token": token_text.strip(), "agentId": agent_id})
        connection.request("POST", "/enroll", body, {"Content-Type": "application/json"})
        response = connection.getresponse()
        answer = json.loads(response.read(64 << 10) or b"{}")
    except (OSError, ssl.SSLError, http.client.HTTPException, ValueError) as exc:
        raise EnrollError(f"cannot enroll at {where}: {exc}") from None
    finally:
        connection.close()
    if response.status != 200:
        message = answer.get("error", {}).get("message", response.reason)
        raise EnrollError(f"the server refused ({response.status}): {message}")
    scheme = "wss" if parts.scheme == "https" else "ws"
    settings = {
        "agentId": agent_id,
        "wsApiUrl": f"{scheme}://{parts.netloc}/agent",
        "wsAgentKey": answer["wsAgentKey"],
    }
    if token.pin is not None:
        settings["wsCertSha256"] = token.pin
    keys = answer.get("releaseKeys")
    if isinstance(keys, list) and keys and all(isinstance(key, str) for key in keys):
        settings["releaseKeys"] = keys  # checked when the settings are loaded
    if token.keyset is not None:
        settings |= _pinned_operator_keys(answer, token.keyset)
    return settings


def _pinned_operator_keys(answer: dict[str, Any], keyset: str) -> dict[str, Any]:
    """The operator keys the answer lists, when they are the set the token pins: the
    server cannot swap in keys of its own (or drop them) after the token was made."""
    keys = answer.get("operatorKeys")
    if (
        not isinstance(keys, list)
        or not all(isinstance(key, str) for key in keys)
        or keyset_fingerprint(keys) != keyset
    ):
        raise EnrollError(
            "the server's operator keys are not the ones the join token pins: refusing to "
            "enroll (nothing was written); ask for a new token, and check the server"
        )
    required = answer.get("requireOperatorSignature", True)
    return {
        "operatorKeys": keys,
        "requireOperatorSignature": required if isinstance(required, bool | list) else True,
    }
