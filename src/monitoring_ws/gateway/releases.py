"""Agent releases the server offers (docs/install.md): ``GET /agent/releases/`` (the list),
``/agent/releases/<version>/manifest.json``, ``/agent/releases/<version>/<artifact>`` and
``GET /install.sh``, on the API listener and on ``agent_listen``, without a token: what
they serve is public, and what makes it safe to run is the release key's signature (agents)
and the SHA-256 the script pins (install.sh).

Only releases whose manifest verifies with ``release_keys`` and whose artifact has the
signed size and SHA-256 are offered; others are logged once and left out. The directory is
read again when its modification time changes (a release published while serving).
"""

from __future__ import annotations

import hashlib
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import attrs
import trio

from ..install.layout import template
from ..protocol.ed25519 import parse_public_key
from ..protocol.release import ReleaseManifest, ReleaseRefusedError, check_signed_manifest

if TYPE_CHECKING:
    from hypercorn.typing import ASGIReceiveCallable, ASGISendCallable, HTTPScope

__all__ = ["INSTALL_PATH", "RELEASES_PREFIX", "ReleaseShelf", "ReleasesEndpoint"]

log = logging.getLogger("monitoring_ws.gateway")

RELEASES_PREFIX = "/agent/releases/"
INSTALL_PATH = "/install.sh"
#: Release directories read at most (the newest are what matter).
MAX_RELEASES = 256
_HOST = re.compile(r"(?:[A-Za-z0-9.-]{1,253}|\[[0-9A-Fa-f:.]{2,45}\])(?::\d{1,5})?")
_CHUNK = 256 << 10


@attrs.frozen
class Release:
    manifest: ReleaseManifest
    document: bytes
    artifact: Path


class ReleaseShelf:
    """The verified releases in ``directory``."""

    def __init__(self, directory: Path, keys: tuple[str, ...]) -> None:
        self.directory = directory
        self.key_texts = keys
        self.keys = tuple(parse_public_key(key) for key in keys)
        self._seen: tuple[int, int] | None = None
        self._releases: dict[str, Release] = {}
        self._refused: set[tuple[str, str]] = set()

    def releases(self) -> dict[str, Release]:
        """Version -> release, read again when the directory changed."""
        try:
            stat = self.directory.stat()
        except OSError:
            return {}
        if self._seen != (stat.st_mtime_ns, stat.st_ino):
            self._seen = (stat.st_mtime_ns, stat.st_ino)
            self._releases = self._scan()
        return self._releases

    def _scan(self) -> dict[str, Release]:
        found: dict[str, Release] = {}
        if not self.keys:
            return found
        folders = sorted(
            (p for p in self.directory.iterdir() if p.is_dir() and not p.name.startswith(".")),
            key=lambda p: p.stat().st_mtime_ns,
        )[-MAX_RELEASES:]
        for folder in folders:
            try:
                release = self._read(folder)
            except (OSError, ValueError, ReleaseRefusedError) as exc:
                if (folder.name, str(exc)) not in self._refused:
                    self._refused.add((folder.name, str(exc)))
                    log.warning("agent release %s is not offered: %s", folder.name, exc)
                continue
            found[release.manifest.version] = release
        return found

    def _read(self, folder: Path) -> Release:
        document = (folder / "manifest.json").read_bytes()[: 64 << 10]
        manifest = check_signed_manifest(json.loads(document), self.keys)
        if manifest.version != folder.name:
            raise ValueError(f"its directory is not named after its version {manifest.version}")
        artifact = folder / manifest.artifact
        with artifact.open("rb") as file:
            digest = hashlib.file_digest(file, "sha256").hexdigest()
        if artifact.stat().st_size != manifest.size or digest != manifest.sha256:
            raise ValueError(f"{manifest.artifact} is not the signed artifact")
        return Release(manifest, document, artifact)

    def latest(self) -> dict[str, Release]:
        """The newest release (by publication) of each platform."""
        newest: dict[str, Release] = {}
        for release in self.releases().values():
            known = newest.get(release.manifest.platform)
            if known is None or release.manifest.published >= known.manifest.published:
                newest[release.manifest.platform] = release
        return newest


def render_install_script(base: str, enroll_url: str, pin: str, latest: dict[str, Release]) -> str:
    """install.sh for this server: one ``case`` arm per platform (``uname -m``)."""
    arms = []
    for platform, release in sorted(latest.items()):
        manifest = release.manifest
        machine = platform.split("-", 1)[1]
        arms.append(
            f"{machine}) version='{manifest.version}'; file='{manifest.artifact}'; "
            f"sha256='{manifest.sha256}' ;;"
        )
    text = template("install.sh")
    for name, value in (
        ("@RELEASES@", "\n".join(arms)),
        ("@PLATFORMS@", ", ".join(sorted(latest)) or "none"),
        ("@SERVER@", base),
        ("@ENROLL_URL@", enroll_url),
        ("@PINNED_KEY@", pin),
    ):
        text = text.replace(name, value)
    return text


async def _send(
    send: ASGISendCallable, status: int, body: bytes, content_type: bytes = b"application/json"
) -> None:
    headers = [(b"content-type", content_type), (b"content-length", str(len(body)).encode())]
    headers.append((b"cache-control", b"no-store"))
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": body, "more_body": False})


async def _error(send: ASGISendCallable, status: int, code: str, message: str) -> None:
    await _send(send, status, json.dumps({"error": {"code": code, "message": message}}).encode())


class ReleasesEndpoint:
    """The routes; ``agent_port`` is ``agent_listen``'s port when agents have their own
    listener, ``pin`` what curl pins (``sha256//...``) or "" without TLS."""

    def __init__(
        self, shelf: ReleaseShelf, *, agent_port: int | None, pin: Callable[[], str]
    ) -> None:
        self.shelf = shelf
        self.agent_port = agent_port
        self.pin = pin

    async def __call__(
        self, scope: HTTPScope, receive: ASGIReceiveCallable, send: ASGISendCallable
    ) -> None:
        if scope["method"] not in {"GET", "HEAD"}:
            await _error(send, 405, "method_not_allowed", "only GET")
            return
        path = scope["path"]
        if path == INSTALL_PATH:
            await self._install(scope, send)
            return
        parts = path[len(RELEASES_PREFIX) :].split("/")
        releases = await trio.to_thread.run_sync(self.shelf.releases)
        if parts == [""]:
            listing = [release.manifest.to_json() for release in releases.values()]
            body = {"releases": listing, "releaseKeys": list(self.shelf.key_texts)}
            await _send(send, 200, json.dumps(body).encode())
            return
        release = releases.get(parts[0]) if len(parts) == 2 else None
        if release is None or parts[1] not in {"manifest.json", release.manifest.artifact}:
            await _error(send, 404, "not_found", f"no such agent release file: {path}")
        elif parts[1] == "manifest.json":
            await _send(send, 200, release.document)
        else:
            await self._artifact(release, send)

    async def _artifact(self, release: Release, send: ASGISendCallable) -> None:
        size = release.manifest.size
        headers = [
            (b"content-type", b"application/octet-stream"),
            (b"content-length", str(size).encode()),
        ]
        await send({"type": "http.response.start", "status": 200, "headers": headers})
        sent = 0
        with release.artifact.open("rb") as file:
            while sent < size:
                chunk = await trio.to_thread.run_sync(file.read, min(_CHUNK, size - sent))
                if not chunk:
                    break
                sent += len(chunk)
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def _install(self, scope: HTTPScope, send: ASGISendCallable) -> None:
        host = dict(scope["headers"]).get(b"host", b"").decode("latin-1")
        if not _HOST.fullmatch(host):
            await _error(send, 400, "bad_request", "a Host header naming this server is needed")
            return
        latest = await trio.to_thread.run_sync(self.shelf.latest)
        if not latest:
            await _error(
                send,
                503,
                "no_release",
                "this server offers no agent release yet: publish one with `monitoring-ws "
                "release publish` (docs/install.md)",
            )
            return
        base = f"{scope['scheme']}://{host}"
        enroll_url = base
        if self.agent_port is not None:
            name = host.rsplit(":", 1)[0] if not host.endswith("]") else host
            enroll_url = f"{scope['scheme']}://{name}:{self.agent_port}"
        pin = self.pin() if scope["scheme"] == "https" else ""
        script = render_install_script(base, enroll_url, pin, latest)
        await _send(send, 200, script.encode(), b"text/x-shellscript; charset=utf-8")
