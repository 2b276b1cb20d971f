"""Agent release manifests (docs/install.md, "Signed updates"): what a release is, its
signed bytes, and the check an agent makes before it installs one. Plain values.

A release directory holds the artifact and ``manifest.json``::

    {"manifest": {"name": "monitoring-ws-agent", "version": "0.18.0",
                  "platform": "linux-x86_64", "artifact": "<file name>",
                  "sha256": "<hex>", "size": 1234, "published": 1767225600},
     "keyId": "<16 hex>", "signature": "<base64 of 64 bytes>"}

The signature is Ed25519 over ``SIGNED_PREFIX`` followed by the manifest's canonical JSON
(RFC 8785, as for envelopes), so a manifest cannot be confused with any other signed thing.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable, Mapping
from typing import Any, TypeGuard

import attrs

from .canonical import canonicalize
from .ed25519 import key_id, verify

__all__ = [
    "ARTIFACT_NAME",
    "SIGNED_PREFIX",
    "VERSION",
    "ReleaseManifest",
    "ReleaseRefusedError",
    "check_release",
    "check_signed_manifest",
    "signed_bytes",
]

SIGNED_PREFIX = b"monitoring-ws release v1\n"
ARTIFACT_NAME = "monitoring-ws-agent"
#: What a release version may be (it names a directory and a file).
VERSION = re.compile(r"[0-9][0-9A-Za-z.+-]{0,63}")
_PLATFORM = re.compile(r"[a-z0-9]+-[a-z0-9_]+")
_FILE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
_SHA256 = re.compile(r"[0-9a-f]{64}")
#: The largest artifact a manifest may announce (an agent stops reading past it).
MAX_ARTIFACT_BYTES = 256 << 20


class ReleaseRefusedError(Exception):
    """A manifest that is not to be installed: ``code`` names why (docs/install.md)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


def _check(pattern: re.Pattern[str], value: Any, name: str) -> str:
    if not isinstance(value, str) or not pattern.fullmatch(value):
        raise ReleaseRefusedError("release_manifest_invalid", f"the manifest's {name} is bad")
    return value


def _count(value: Any) -> TypeGuard[int]:
    return type(value) is int and value >= 0


@attrs.frozen
class ReleaseManifest:
    version: str
    platform: str
    artifact: str
    sha256: str
    size: int
    published: int
    name: str = ARTIFACT_NAME

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "version": self.version,
            "platform": self.platform,
            "artifact": self.artifact,
            "sha256": self.sha256,
            "size": self.size,
            "published": self.published,
        }

    @classmethod
    def from_json(cls, data: Any) -> ReleaseManifest:
        """The manifest's fields, checked; ReleaseRefusedError(release_manifest_invalid)."""
        if not isinstance(data, Mapping) or data.get("name") != ARTIFACT_NAME:
            raise ReleaseRefusedError("release_manifest_invalid", "not an agent release")
        size, published = data.get("size"), data.get("published")
        if not (_count(size) and _count(published)):
            raise ReleaseRefusedError("release_manifest_invalid", "a bad size or date")
        if size > MAX_ARTIFACT_BYTES:
            raise ReleaseRefusedError("release_manifest_invalid", "the artifact is too large")
        return cls(
            version=_check(VERSION, data.get("version"), "version"),
            platform=_check(_PLATFORM, data.get("platform"), "platform"),
            artifact=_check(_FILE, data.get("artifact"), "artifact name"),
            sha256=_check(_SHA256, data.get("sha256"), "sha256"),
            size=size,
            published=published,
        )


def signed_bytes(manifest: ReleaseManifest) -> bytes:
    """What the release key signs."""
    return SIGNED_PREFIX + canonicalize(manifest.to_json())


def check_release(
    document: Any, trusted: Iterable[bytes], *, version: str, platform: str
) -> ReleaseManifest:
    """``check_signed_manifest``, and the manifest is of ``version`` for ``platform``
    (what an agent asked for ``version`` installs): ``release_manifest_invalid``,
    ``release_platform_mismatch``."""
    manifest = check_signed_manifest(document, trusted)
    if manifest.version != version:
        raise ReleaseRefusedError(
            "release_manifest_invalid",
            f"asked for {version}, the signed manifest is of {manifest.version}",
        )
    if manifest.platform != platform:
        raise ReleaseRefusedError(
            "release_platform_mismatch",
            f"release {version} is for {manifest.platform}, this agent runs on {platform}",
        )
    return manifest


def check_signed_manifest(document: Any, trusted: Iterable[bytes]) -> ReleaseManifest:
    """The manifest of a ``manifest.json`` document whose signature verifies with one of
    the ``trusted`` public keys; ReleaseRefusedError otherwise (``release_key_untrusted``,
    ``release_signature_invalid``, ``release_manifest_invalid``)."""
    if not isinstance(document, Mapping):
        raise ReleaseRefusedError("release_manifest_invalid", "manifest.json is not an object")
    manifest = ReleaseManifest.from_json(document.get("manifest"))
    wanted, signature_text = document.get("keyId"), document.get("signature")
    keys = [key for key in trusted if key_id(key) == wanted]
    if not keys:
        raise ReleaseRefusedError(
            "release_key_untrusted",
            f"the release is signed by key {str(wanted)[:16]}, which this agent does not trust",
        )
    try:
        signature = base64.b64decode(str(signature_text), validate=True)
    except (binascii.Error, ValueError):
        signature = b""
    if not any(verify(key, signed_bytes(manifest), signature) for key in keys):
        raise ReleaseRefusedError(
            "release_signature_invalid",
            f"the signature of release {manifest.version} does not verify: it was changed "
            "after signing",
        )
    return manifest
