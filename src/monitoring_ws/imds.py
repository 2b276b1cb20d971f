"""EC2 instance metadata (IMDSv2): a token, then one path; None when it does not answer."""

from __future__ import annotations

import urllib.request

__all__ = ["IMDS_ENDPOINT", "imds_get"]

IMDS_ENDPOINT = "http://169.254.169.254"


def imds_get(path: str, endpoint: str = IMDS_ENDPOINT, timeout_s: float = 1.0) -> str | None:
    """``path`` (e.g. ``meta-data/instance-id``) under ``/latest/``, or None on any failure."""
    try:
        token_request = urllib.request.Request(  # noqa: S310 - http to the metadata endpoint
            f"{endpoint}/latest/api/token",
            method="PUT",
            headers={"X-aws-ec2-metadata-token-ttl-seconds": "60"},
        )
        with urllib.request.urlopen(token_request, timeout=timeout_s) as response:  # noqa: S310
            token = response.read().decode()
        request = urllib.request.Request(  # noqa: S310
            f"{endpoint}/latest/{path}", headers={"X-aws-ec2-metadata-token": token}
        )
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310
            value = str(response.read().decode()).strip()
    except (OSError, ValueError):
        return None
    return value or None
