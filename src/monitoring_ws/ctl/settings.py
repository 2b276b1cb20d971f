"""Where the client finds the server and its token: flags, then the environment, then the
client config file (refused when others may read it)."""

from __future__ import annotations

import json
import os
import re
import stat
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs

__all__ = ["ClientSettings", "CtlError", "config_dir", "load_client_settings"]

ENV_URL, ENV_TOKEN = "MONITORING_WS_API_URL", "MONITORING_WS_TOKEN"
DEFAULT_URL = "http://127.0.0.1:4000"


class CtlError(Exception):
    """What went wrong, said for the operator (and the fix); ``code`` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


@attrs.frozen
class ClientSettings:
    url: str
    token: str | None = attrs.field(default=None, repr=False)
    #: The server certificate's SHA-256 (hex), checked before the token is sent.
    cert_sha256: str | None = None
    timeout_s: float = 30.0


def config_dir(environ: Mapping[str, str] = os.environ) -> Path:
    """``$XDG_CONFIG_HOME/monitoring-ws``, else ``~/.config/monitoring-ws``."""
    base = environ.get("XDG_CONFIG_HOME") or str(Path("~/.config").expanduser())
    return Path(base) / "monitoring-ws"


def _file_values(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    mode = path.stat().st_mode
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        raise CtlError(
            f"{path} may be read by others (mode {stat.S_IMODE(mode):o}): it holds a token; "
            f"chmod 600 {path}",
            2,
        )
    try:
        values = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise CtlError(f"cannot read {path}: {exc}", 2) from None
    if not isinstance(values, dict):
        raise CtlError(f"{path} must hold a JSON object", 2)
    return values


def load_client_settings(
    *,
    url: str | None = None,
    token_file: Path | None = None,
    cert_sha256: str | None = None,
    config: Path | None = None,
    environ: Mapping[str, str] = os.environ,
) -> ClientSettings:
    """Each setting from the first of: the flag, the environment, the config file
    (``client.json`` in ``config_dir()``). Raises ``CtlError`` saying what to fix."""
    values = _file_values(config or config_dir(environ) / "client.json")
    token = None
    if token_file is not None:  # a token never goes in argv, where ps shows it
        try:
            token = token_file.read_text(encoding="utf-8").strip()
        except OSError as exc:
            raise CtlError(f"cannot read the token file {token_file}: {exc}", 2) from None
    token = token or environ.get(ENV_TOKEN) or values.get("token")
    url = url or environ.get(ENV_URL) or values.get("url") or DEFAULT_URL
    parts = urlsplit(url)
    if parts.scheme not in {"http", "https"} or not parts.hostname:
        raise CtlError(f"the server URL must be http:// or https:// with a host, not {url!r}", 2)
    pin = cert_sha256 or values.get("certSha256")
    if pin is not None:
        pin = str(pin).replace(":", "").lower()
        if not re.fullmatch(r"[0-9a-f]{64}", pin):
            raise CtlError("the certificate pin must be 64 hex digits (colons allowed)", 2)
    return ClientSettings(url.rstrip("/"), token or None, pin)
