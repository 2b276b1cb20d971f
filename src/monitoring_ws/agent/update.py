"""``update``: the agent installs a signed release and restarts into it (docs/install.md,
"Signed updates").

The agent fetches ``manifest.json`` of the version asked for from the server it is
connected to, checks its Ed25519 signature against ``releaseKeys``, downloads the artifact
into a staging file while hashing it, and only when the SHA-256 and size match moves it to
``releases/<version>``, writes the trial (``update/pending``), switches ``current`` and asks
to be restarted. The new release confirms itself once it is connected; if it is not
connected by the deadline it switches back and restarts the old one (the launcher does
the same for a release that cannot start). A refusal leaves nothing behind.
"""

from __future__ import annotations

import hashlib
import http.client
import json
import logging
import os
import shutil
import time
import uuid
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import trio

from .. import __version__
from ..install.layout import ARTIFACT_FILE, AgentHome, platform_tag
from ..protocol.release import VERSION, ReleaseManifest, ReleaseRefusedError, check_release
from .handlers import CommandContext, CommandFailed
from .https import PinError, open_connection

__all__ = ["release_base", "update", "watch_trial"]

log = logging.getLogger("monitoring_ws.agent")

MAX_MANIFEST_BYTES = 64 << 10
DEFAULT_DEADLINE_S = 120
_CHUNK = 256 << 10


def release_base(agent_url: str, given: Any = None) -> str:
    """Where releases are fetched from: ``url`` from the command's arguments, else the
    server the agent is connected to (``wss://host:port/...`` -> ``https://host:port``)."""
    if isinstance(given, str) and given:
        return given.rstrip("/")
    parts = urlsplit(agent_url)
    scheme = "https" if parts.scheme == "wss" else "http"
    return f"{scheme}://{parts.netloc}/agent/releases"


def _get(url: str, pin: str | None, insecure: bool) -> http.client.HTTPResponse:
    """The response to ``GET url`` (status checked); CommandFailed(update_unreachable)."""
    try:
        connection = open_connection(url, pin, insecure=insecure)
        target = urlsplit(url).path
        connection.request("GET", target, headers={"User-Agent": f"monitoring-ws/{__version__}"})
        response = connection.getresponse()
    except (OSError, PinError, ValueError, http.client.HTTPException) as exc:
        raise CommandFailed("update_unreachable", f"cannot fetch {url}: {exc}") from None
    if response.status != 200:
        connection.close()
        raise CommandFailed(
            "update_not_found" if response.status == 404 else "update_unreachable",
            f"GET {url}: {response.status} {response.reason}",
        )
    return response


def _fetch_manifest(base: str, version: str, keys: tuple[bytes, ...], pin: str | None,
                    insecure: bool) -> ReleaseManifest:  # fmt: skip
    response = _get(f"{base}/{quote(version)}/manifest.json", pin, insecure)
    try:
        document = json.loads(response.read(MAX_MANIFEST_BYTES + 1)[:MAX_MANIFEST_BYTES])
    except (OSError, ValueError) as exc:
        raise CommandFailed("release_manifest_invalid", f"manifest.json: {exc}") from None
    finally:
        response.close()
    try:
        return check_release(document, keys, version=version, platform=platform_tag())
    except ReleaseRefusedError as exc:
        raise CommandFailed(exc.code, exc.message) from None


def _download(base: str, manifest: ReleaseManifest, staged: Path, pin: str | None,
              insecure: bool) -> None:  # fmt: skip
    """The artifact into ``staged``, refused unless its size and SHA-256 are the signed
    ones (it is never read past the signed size)."""
    url = f"{base}/{quote(manifest.version)}/{quote(manifest.artifact)}"
    digest, size = hashlib.sha256(), 0
    response = _get(url, pin, insecure)
    try:
        with staged.open("xb") as out:
            while chunk := response.read(min(_CHUNK, manifest.size + 1 - size)):
                digest.update(chunk)
                out.write(chunk)
                size += len(chunk)
                if size > manifest.size:
                    break
            out.flush()
            os.fsync(out.fileno())
    except OSError as exc:
        raise CommandFailed("update_unreachable", f"downloading {url}: {exc}") from None
    finally:
        response.close()
    if size != manifest.size or digest.hexdigest() != manifest.sha256:
        raise CommandFailed(
            "release_artifact_mismatch",
            f"the artifact of {manifest.version} is not the one the manifest signs "
            f"({size} bytes, sha256 {digest.hexdigest()[:16]}...): refused",
        )


def install_release(
    home: AgentHome, base: str, version: str, keys: tuple[bytes, ...], pin: str | None,
    *, insecure: bool = False,
) -> ReleaseManifest:  # fmt: skip
    """Fetch, verify and unpack ``version`` into ``releases/<version>`` (blocking)."""
    manifest = _fetch_manifest(base, version, keys, pin, insecure)
    home.releases.mkdir(parents=True, exist_ok=True, mode=0o700)
    staging = home.releases / f".incoming-{uuid.uuid4().hex}"
    staging.mkdir(mode=0o700)
    try:
        _download(base, manifest, staging / ARTIFACT_FILE, pin, insecure)
        target = home.releases / version
        if target.exists():  # left by an earlier attempt: the verified copy replaces it
            shutil.rmtree(target)
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return manifest


async def update(args: Mapping[str, Any], context: CommandContext) -> dict[str, Any]:
    """Install release ``args["version"]`` and restart into it (``deadlineS``: how long
    it has to connect before it is rolled back, default 120; ``url``: another release
    server)."""
    home = AgentHome.from_environment()
    if home is None or context.restart is None:
        raise CommandFailed(
            "update_unsupported",
            "this agent was not installed by install.sh or the package: upgrade it the way "
            "it was installed (pip: pip install -U monitoring-ws)",
        )
    version = args.get("version")
    if not isinstance(version, str) or not VERSION.fullmatch(version):
        raise CommandFailed("bad_args", 'update needs {"version": "X.Y.Z"}')
    deadline_s = args.get("deadlineS", DEFAULT_DEADLINE_S)
    if type(deadline_s) is not int or not 5 <= deadline_s <= 3600:
        raise CommandFailed("bad_args", "deadlineS: whole seconds from 5 to 3600")
    settings = context.settings
    if not settings.release_keys:
        raise CommandFailed(
            "update_no_release_key",
            "this agent trusts no release key: enroll it again or set releaseKeys in its "
            "settings (docs/install.md)",
        )
    if version == __version__:
        return {"updated": False, "version": version, "message": "already running it"}
    if home.read_pending() is not None:
        raise CommandFailed("update_in_progress", "an update is on trial: wait for it")
    base = release_base(settings.url, args.get("url"))
    # The certificate pin is the agent's server's: another release server is checked
    # against the system's trust (the signature is what makes a release safe either way).
    pin = settings.cert_sha256 if args.get("url") is None else None
    await trio.to_thread.run_sync(
        lambda: install_release(
            home, base, version, settings.release_keys, pin, insecure=settings.insecure
        )
    )
    old = home.running()
    home.write_pending(time.time() + deadline_s, old, version)
    home.point_current_at(version)
    log.warning("updating from %s to %s: restarting", __version__, version)
    context.restart()
    return {"updated": True, "from": __version__, "to": version, "deadlineS": deadline_s}


async def watch_trial(home: AgentHome, connected: Callable[[], bool], restart: trio.Event) -> None:
    """In a release on trial: confirm it once ``connected()``, or switch back and restart
    (the agent's connected event is replaced at each connection, hence a question)."""
    trial = home.read_pending()
    if trial is None:
        return
    deadline, old, new = trial
    if new != __version__:  # the launcher switched back, or an older copy runs
        home.finish("abandoned", old, new, time.time())
        log.warning("the update to %s did not take: %s runs", new, __version__)
        return
    with trio.move_on_after(max(0.0, deadline - time.time())):
        while not connected():
            await trio.sleep(0.2)
        home.finish("updated", old, new, time.time())
        log.info("update to %s confirmed (connected)", new)
        return
    home.point_current_at(old)
    home.finish("rolled_back", old, new, time.time())
    log.warning("release %s did not connect in time: rolling back to %s", new, old)
    restart.set()


def report_last_update(home: AgentHome) -> None:
    """Say once (a warning, shipped to the server) that the last update was rolled back."""
    try:
        fields = home.last.read_text(encoding="ascii").split()
    except OSError:
        return
    if len(fields) == 4 and fields[0] == "rolled_back":
        log.warning("the update from %s to %s was rolled back", fields[1], fields[2])
        home.last.write_text(f"reported_{' '.join(fields)}\n", encoding="ascii")


def restart_through(home: AgentHome, argv: list[str]) -> None:
    """Replace this process with the launcher (same pid: systemd sees one service)."""
    logging.shutdown()
    os.execv(home.launcher, [str(home.launcher), *argv])  # noqa: S606 - our own launcher
