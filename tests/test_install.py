"""Installing and updating agents as an operator would (docs/install.md): the zipapp and the
.deb that ``deploy/build.py`` makes, the ``install.sh`` a real server renders, run in its
``--prefix`` mode with a join token, and signed self-updates sent as a job.

The agents run from the zipapp under the system's own Python (not this venv), installed
into scratch prefixes; nothing here needs root or systemd.
"""

from __future__ import annotations

import base64
import contextlib
import functools
import http.server
import json
import os
import shutil
import signal
import ssl
import subprocess
import sys
import threading
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from monitoring_ws import __version__
from monitoring_ws.clock import wall_ms
from monitoring_ws.gateway.enrollment import JoinTokens
from monitoring_ws.host.serving.tls import public_key_pin
from monitoring_ws.install.layout import platform_tag
from monitoring_ws.protocol.ed25519 import key_id
from monitoring_ws.protocol.release import ReleaseManifest, signed_bytes

from .conftest import REPO, StartServer
from .support.eventually import eventually
from .support.processes import isolated_env

NEW = "9.9.9"
#: A release whose agent cannot connect (its dialer is broken on purpose).
BROKEN = "9.9.5"
RELEASE = (sys.executable, "-m", "monitoring_ws", "release")
CTL = (sys.executable, "-m", "monitoring_ws", "ctl")
UPDATE = ("update", "-l", "fleet=installed", "--max-concurrency", "1", NEW)


def _python() -> str:
    """An interpreter without this venv's packages: what a server would have."""
    for candidate in ("/usr/bin/python3", getattr(sys, "_base_executable", "")):
        if candidate and Path(candidate).is_file():
            probe = subprocess.run(
                [candidate, "-c", "import sys; sys.exit(sys.version_info < (3, 11))"],
                check=False,
            )
            if probe.returncode == 0:
                return candidate
    pytest.fail("no Python >= 3.11 outside the venv to run the installed agent with")


def _build(out: Path, *extra: str) -> dict[str, str]:
    done = subprocess.run(
        [sys.executable, REPO / "deploy" / "build.py", "--out", out, *extra],
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    built: dict[str, str] = json.loads(done.stdout.splitlines()[-1])
    return built


def _break_dialer(pyz: Path) -> None:
    """Rewrite the agent's dialer in ``pyz`` so that it never connects."""
    data = pyz.read_bytes()
    shebang = data[: data.index(b"PK\x03\x04")]
    with zipfile.ZipFile(pyz) as old:
        entries = [(info, old.read(info)) for info in old.infolist()]
    with pyz.open("wb") as out:
        out.write(shebang)
        with zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as new:
            for info, content in entries:
                patched = content
                if info.filename.endswith("monitoring_ws/agent/dial.py"):
                    marker = b'its reader runs in ``nursery``."""\n'
                    assert marker in content
                    broken = b'    raise OSError("this release cannot connect")\n'
                    patched = content.replace(marker, marker + broken)
                new.writestr(info, patched)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The current version's zipapp and .deb, a newer zipapp, a broken one."""
    out = tmp_path_factory.mktemp("artifacts")
    built: dict[str, Any] = {"current": _build(out)}
    built["new"] = _build(out, "--set-version", NEW, "--no-deb")
    built["broken"] = _build(out, "--set-version", BROKEN, "--no-deb")
    _break_dialer(Path(built["broken"]["zipapp"]))
    return built


@pytest.fixture(scope="module")
def release_key(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """A release key made by ``monitoring-ws release key``: its file and public key."""
    where = tmp_path_factory.mktemp("release-key") / "release.pem"
    made = subprocess.run(
        [*RELEASE, "key", where],
        capture_output=True,
        text=True,
        check=True,
    )
    assert where.stat().st_mode & 0o777 == 0o600
    return where, made.stdout.splitlines()[-1]


def _publish(artifact: str, key: Path, releases: Path, *extra: str) -> None:
    done = subprocess.run(
        [*RELEASE, "publish", artifact, "--key", key, "--releases-dir", releases, *extra],
        capture_output=True,
        text=True,
        check=False,
        env=isolated_env(),
    )
    assert done.returncode == 0, done.stderr


async def _install(
    api_url: str, pin: str, prefix: Path, agent_id: str, token: str | None
) -> subprocess.CompletedProcess[bytes]:
    """The one-liner as docs/install.md gives it for a self-signed server (curl pins its
    key), in ``--prefix`` mode."""
    env = isolated_env(MONITORING_WS_PYTHON=_python())
    if token is not None:
        env["MONITORING_WS_JOIN_TOKEN"] = token
    fetch = 'curl -fsSL -k --pinnedpubkey "$2" "$1/install.sh"'
    script = f'{fetch} | sh -s -- --prefix "$3" --agent-id "$4"'
    return await trio.run_process(
        ["sh", "-c", script, "install", api_url, pin, str(prefix), agent_id],
        capture_stdout=True,
        capture_stderr=True,
        check=False,
        env=env,
    )


def _pid(prefix: Path) -> int:
    return int((prefix / "var/lib/monitoring-ws-agent/agent.pid").read_text())


@contextlib.contextmanager
def _stopping(*prefixes: Path) -> Iterator[None]:
    """Stop the agents install.sh started in these prefixes, however the test ends."""
    try:
        yield
    finally:
        for prefix in prefixes:
            with contextlib.suppress(OSError, ValueError):
                os.kill(_pid(prefix), signal.SIGKILL)


async def _versions(http: httpx.AsyncClient) -> dict[str, str]:
    """Connected agents and the version each reported."""
    listed = (await http.get("/api/agents")).json()["agents"]
    return {
        agent["agentId"]: agent["details"]["websocket"].get("agentVersion", "")
        for agent in listed
        if agent["connected"]
    }


def test_the_package_builds_a_zipapp_and_a_deb(artifacts: dict[str, Any], tmp_path: Path) -> None:
    pyz, deb = Path(artifacts["current"]["zipapp"]), Path(artifacts["current"]["deb"])
    assert pyz.name == f"monitoring-ws-agent-{__version__}-{platform_tag()}.pyz"
    ran = subprocess.run(
        [_python(), pyz, "--version"],
        capture_output=True,
        text=True,
        check=False,
        env=isolated_env(SHIV_ROOT=str(tmp_path / "shiv")),
    )
    assert ran.stdout.strip() == f"monitoring-ws {__version__}", ran.stderr
    with zipfile.ZipFile(pyz) as archive:  # the agent's dependencies, not the server's
        tops = {name.split("/")[1] for name in archive.namelist() if "site-packages/" in name}
    assert {"trio", "trio_websocket", "psutil", "rfc8785", "attrs", "monitoring_ws"} <= tops
    assert not tops & {"quart", "hypercorn", "boto3", "coredis", "cryptography"}

    contents = subprocess.run(
        ["dpkg-deb", "--contents", deb], capture_output=True, text=True, check=True
    ).stdout
    for path in (
        "./usr/lib/monitoring-ws-agent/monitoring-ws-agent.pyz",
        "./usr/bin/monitoring-ws-agent",
        "./lib/systemd/system/monitoring-ws-agent.service",
    ):
        assert path in contents
    root = tmp_path / "deb"
    subprocess.run(["dpkg-deb", "-x", deb, root], check=True)
    subprocess.run(["dpkg-deb", "-e", deb, root / "DEBIAN"], check=True)
    control = (root / "DEBIAN/control").read_text()
    assert f"Version: {__version__}" in control
    assert "Depends: python3 (>= 3.11)" in control
    launcher = root / "usr/bin/monitoring-ws-agent"
    assert os.access(launcher, os.X_OK)
    subprocess.run(["sh", "-n", launcher], check=True)  # it parses as POSIX sh
    assert "packaged='/usr/lib/monitoring-ws-agent/monitoring-ws-agent.pyz'" in (
        launcher.read_text()
    )
    unit = (root / "lib/systemd/system/monitoring-ws-agent.service").read_text()
    assert "ExecStart=/usr/bin/monitoring-ws-agent agent --config %d/agent.json" in unit
    assert "User=monitoring-ws-agent" in unit
    assert "DynamicUser" not in unit
    assert "LoadCredential=agent.json:/etc/monitoring-ws/agent.json" in unit
    postinst = (root / "DEBIAN/postinst").read_text()
    assert "adduser --system" in postinst
    assert "umask 077" in postinst
    assert "chmod 0600 /etc/monitoring-ws/agent.json" in postinst
    postrm = (root / "DEBIAN/postrm").read_text()
    # The outbox (in /var/lib/monitoring-ws-agent) goes only with purge, not on upgrade.
    assert 'if [ "$1" = purge ]; then\n  rm -rf /var/lib/monitoring-ws-agent' in postrm
    for script in ("postinst", "prerm", "postrm"):
        assert os.access(root / "DEBIAN" / script, os.X_OK)
        subprocess.run(["sh", "-n", root / "DEBIAN" / script], check=True)


async def test_install_sh_installs_an_agent_that_connects_and_updates_by_job(
    start_server: StartServer,
    tmp_path: Path,
    artifacts: dict[str, Any],
    release_key: tuple[Path, str],
) -> None:
    """The served install.sh, twice over (idempotent), then ``update`` to two agents as a
    job: they come back with the new version; a release whose agent cannot connect rolls
    itself back; a tampered manifest or artifact is refused with nothing left behind."""
    key_file, public = release_key
    releases, state = tmp_path / "releases", tmp_path / "state"
    _publish(artifacts["current"]["zipapp"], key_file, releases)
    running = await start_server(
        state_dir=state, releases_dir=str(releases), release_keys=(public,), tls_self_signed=True
    )
    pin = running.fingerprint
    token = str(JoinTokens(state).create(ttl_s=600, uses=2, agents=(), pin=pin, now_ms=wall_ms()))
    curl_pin = public_key_pin(state / "tls" / "cert.pem")
    first, second = tmp_path / "first", tmp_path / "second"
    with _stopping(first, second):
        trust = ssl.create_default_context(cafile=state / "tls" / "cert.pem")
        async with httpx.AsyncClient(base_url=running.api_url, timeout=30, verify=trust) as http:
            script = await http.get("/install.sh")
            assert script.status_code == 200
            assert script.text.startswith("#!/bin/sh\n")
            assert artifacts["current"]["sha256"] in script.text  # the pinned artifact
            assert f"pinned_key='{curl_pin}'" in script.text  # ... and the server's key

            done = await _install(running.api_url, curl_pin, first, "inst-1", token)
            assert done.returncode == 0, done.stderr.decode()
            done = await _install(running.api_url, curl_pin, second, "inst-2", token)
            assert done.returncode == 0, done.stderr.decode()
            config = first / "etc/monitoring-ws/agent.json"
            assert config.stat().st_mode & 0o777 == 0o600
            assert json.loads(config.read_text())["releaseKeys"] == [public]

            async def both_on(version: str) -> bool:
                versions = await _versions(http)
                return versions.get("inst-1") == versions.get("inst-2") == version

            await eventually(lambda: both_on(__version__), timeout_s=60, what="both agents")
            # Again, without a token: enrolled already, the same release, restarted.
            before = _pid(first)
            again = await _install(running.api_url, curl_pin, first, "inst-1", None)
            assert again.returncode == 0, again.stderr.decode()
            assert b"already enrolled" in again.stdout
            assert b"already here" in again.stdout
            assert _pid(first) != before
            await eventually(lambda: both_on(__version__), timeout_s=60, what="back again")

            _publish(artifacts["new"]["zipapp"], key_file, releases)
            for agent_id in ("inst-1", "inst-2"):
                labelled = await http.patch(
                    f"/api/agents/{agent_id}/labels", json={"labels": {"fleet": "installed"}}
                )
                assert labelled.status_code == 200, labelled.text
            # As an operator would: a job, one agent at a time.
            ctl = await trio.run_process(
                [*CTL, "--url", running.api_url, "--cert-sha256", pin, *UPDATE],
                capture_stdout=True,
                capture_stderr=True,
                check=False,
                env=isolated_env(),
            )
            printed = ctl.stdout.decode()
            assert ctl.returncode == 0, printed + ctl.stderr.decode()
            assert f"inst-1: updating {__version__} -> {NEW}" in printed
            assert "succeeded: 2 succeeded" in printed
            await eventually(lambda: both_on(NEW), timeout_s=60, what=f"both on {NEW}")
            home = first / "var/lib/monitoring-ws-agent"
            await eventually((home / "update/last").is_file, what="the update confirmed")
            assert (home / "update/last").read_text().startswith(f"updated {__version__} {NEW}")
            assert os.readlink(home / "current") == f"releases/{NEW}"

            # A release that cannot connect: the agent goes back to the one that could.
            _publish(artifacts["broken"]["zipapp"], key_file, releases)
            sent = await http.post(
                "/api/agents/inst-1/commands",
                json={"command": "update", "args": {"version": BROKEN, "deadlineS": 5}},
            )
            assert sent.status_code == 200, sent.text
            assert sent.json()["result"]["to"] == BROKEN
            await eventually(
                lambda: (home / "update/last").read_text().startswith("rolled_back"),
                timeout_s=60,
                what="the broken release rolled back",
            )
            await eventually(lambda: both_on(NEW), timeout_s=60, what=f"inst-1 back on {NEW}")
            assert os.readlink(home / "current") == f"releases/{NEW}"

            await _refuses_tampered_releases(http, tmp_path, releases, home)
            assert (await _versions(http))["inst-1"] == NEW


async def _refuses_tampered_releases(
    api: httpx.AsyncClient, tmp_path: Path, releases: Path, home: Path
) -> None:
    """A release server that changed a signed manifest, the artifact under a signed
    manifest, or signs with a key the agent does not trust (``url`` points the agent at
    it): each refused by name, nothing left in ``releases/``, the agent still on NEW."""
    shelf = tmp_path / "tampered"
    changed = shelf / "9.9.7"  # the manifest's version changed after signing
    shutil.copytree(releases / NEW, changed)
    document = json.loads((changed / "manifest.json").read_text())
    document["manifest"]["version"] = "9.9.7"
    (changed / "manifest.json").write_text(json.dumps(document))
    swapped = shelf / BROKEN  # signed as it was, but another artifact under it
    shutil.copytree(releases / BROKEN, swapped)
    [pyz] = swapped.glob("*.pyz")
    data = bytearray(pyz.read_bytes())
    data[len(data) // 2] ^= 0xFF
    pyz.write_bytes(bytes(data))
    untrusted = shelf / "9.9.4"  # signed with a key nobody gave the agent
    untrusted.mkdir()
    manifest = ReleaseManifest("9.9.4", platform_tag(), "a.pyz", "0" * 64, 1, 0)
    stranger = Ed25519PrivateKey.generate()
    public = stranger.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signature = base64.b64encode(stranger.sign(signed_bytes(manifest))).decode()
    (untrusted / "manifest.json").write_text(
        json.dumps(
            {"manifest": manifest.to_json(), "keyId": key_id(public), "signature": signature}
        )
    )
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(shelf))
    with _static_server(handler) as url:
        for version, code in (
            ("9.9.7", "release_signature_invalid"),
            (BROKEN, "release_artifact_mismatch"),
            ("9.9.4", "release_key_untrusted"),
        ):
            answer = await api.post(
                "/api/agents/inst-1/commands",
                json={"command": "update", "args": {"version": version, "url": url}},
            )
            assert answer.status_code == 200, answer.text
            assert answer.json()["error"]["code"] == code, answer.text
    assert sorted(p.name for p in (home / "releases").iterdir()) == sorted(
        [__version__, NEW, BROKEN]
    )
    assert os.readlink(home / "current") == f"releases/{NEW}"
    assert not (home / "update/pending").exists()


@contextlib.contextmanager
def _static_server(handler: Any) -> Iterator[str]:
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()


def test_release_publish_refuses_what_it_cannot_sign(tmp_path: Path) -> None:
    key = tmp_path / "release.pem"
    key.write_text("not a key")
    odd = tmp_path / "agent.pyz"
    odd.write_bytes(b"")
    for artifact, says in (
        (odd, "expected monitoring-ws-agent-VERSION-PLATFORM.pyz"),
        (tmp_path / f"monitoring-ws-agent-1.0-{platform_tag()}.pyz", "No such file"),
    ):
        done = subprocess.run(
            [*RELEASE, "publish", artifact, "--key", key, "--releases-dir", tmp_path / "x"],
            capture_output=True,
            text=True,
            check=False,
        )
        assert done.returncode == 1
        assert says in done.stderr
    assert not (tmp_path / "x").exists()
