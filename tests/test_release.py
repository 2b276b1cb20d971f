"""The agent's Ed25519 verifier (RFC 8032 vectors, and agreement with ``cryptography`` on
random and damaged signatures) and the release manifest check an update makes."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import shutil
import subprocess
import zipfile
from pathlib import Path
from typing import Any

import httpx
import pytest
import trio
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from monitoring_ws.gateway.releases import Release, render_install_script
from monitoring_ws.install.layout import platform_tag, render_launcher
from monitoring_ws.protocol.ed25519 import key_id, parse_public_key, public_key, sign, verify
from monitoring_ws.protocol.release import (
    ReleaseManifest,
    ReleaseRefusedError,
    check_signed_manifest,
    signed_bytes,
)

from .conftest import REPO, StartServer
from .support.inprocess import connected_agent
from .support.processes import isolated_env, run_cli

# RFC 8032, section 7.1: TEST 1, 2, 3 and SHA(abc) (public key, message, signature).
RFC8032 = [
    (
        "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a",
        "",
        "e5564300c360ac729086e2cc806e828a84877f1eb8e5d974d873e065224901555fb8821590a33bacc61e39701cf9b46bd25bf5f0595bbe24655141438e7a100b",
    ),
    (
        "3d4017c3e843895a92b70aa74d1b7ebc9c982ccf2ec4968cc0cd55f12af4660c",
        "72",
        "92a009a9f0d4cab8720e820b5f642540a2b27b5416503f8fb3762223ebdb69da085ac1e43e15996e458f3613d0f11d8c387b2eaeb4302aeeb00d291612bb0c00",
    ),
    (
        "fc51cd8e6218a1a38da47ed00230f0580816ed13ba3303ac5deb911548908025",
        "af82",
        "6291d657deec24024827e69c3abe01a30ce548a284743a445e3680d7db5ac3ac18ff9b538d16f290ae67f760984dc6594a7c15e9716ed28dc027beceea1ec40a",
    ),
    (
        "ec172b93ad5e563bf4932c70e1245034c35467ef2efd4d64ebf819683467e2bf",
        "ddaf35a193617abacc417349ae20413112e6fa4e89a97ea20a9eeee64b55d39a2192992a274fc1a836ba3c23a3feebbd454d4423643ce80e2a9ac94fa54ca49f",
        "dc2a4459e7369633a52b1bf277839a00201009a3efbf3ecb69bea2186c26b58909351fc9ac90b3ecfdfbc7c66431e0303dca179c138ac17ad9bef1177331a704",
    ),
]


@pytest.mark.parametrize(("public", "message", "signature"), RFC8032)
def test_the_rfc_8032_vectors_verify_and_any_change_fails(
    public: str, message: str, signature: str
) -> None:
    key, data, sig = bytes.fromhex(public), bytes.fromhex(message), bytes.fromhex(signature)
    assert verify(key, data, sig)
    assert not verify(key, data + b"x", sig)
    assert not verify(key, data, sig[:63] + bytes([sig[63] ^ 1]))
    assert not verify(key, data, sig[:-1])
    # S + L: the same point, an S that is not reduced: refused (malleability).
    s = int.from_bytes(sig[32:], "little") + (2**252 + 27742317777372353535851937790883648493)
    assert not verify(key, data, sig[:32] + s.to_bytes(32, "little"))


def test_signing_gives_the_rfc_8032_signatures() -> None:
    seeds = [  # TEST 1, 2, 3 and SHA(abc): the private keys of RFC8032's public keys
        "9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60",
        "4ccd089b28ff96da9db6c346ec114e0f5b8a319f35aba624da8cf6ed4fb8a6fb",
        "c5aa8df43f9f837bedb7442f31dcb7b166d38535076f094b85ce3a2e0b4458f7",
        "833fe62409237b9d62ec77587520911e9a759cec1d19755b7da901b96dca3d42",
    ]
    for seed, (public, message, signature) in zip(seeds, RFC8032, strict=True):
        assert public_key(bytes.fromhex(seed)).hex() == public
        assert sign(bytes.fromhex(seed), bytes.fromhex(message)).hex() == signature


@given(seed=st.binary(min_size=32, max_size=32), message=st.binary(max_size=128))
def test_signing_agrees_with_cryptography(seed: bytes, message: bytes) -> None:
    theirs = Ed25519PrivateKey.from_private_bytes(seed)
    raw = theirs.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    assert public_key(seed) == raw
    assert sign(seed, message) == theirs.sign(message)


@given(message=st.binary(max_size=256), flip=st.integers(0, 64 * 8 - 1))
def test_it_agrees_with_cryptography(message: bytes, flip: int) -> None:
    private = Ed25519PrivateKey.generate()
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    signature = private.sign(message)
    assert verify(public, message, signature)
    damaged = bytearray(signature)
    damaged[flip // 8] ^= 1 << (flip % 8)
    try:
        private.public_key().verify(bytes(damaged), message)
        expected = True
    except Exception:  # cryptography's InvalidSignature
        expected = False
    assert verify(public, message, bytes(damaged)) is expected


def test_public_keys_are_written_with_their_algorithm() -> None:
    raw = bytes(range(32))
    assert parse_public_key("ed25519:" + base64.b64encode(raw).decode()) == raw
    for bad, says in (
        ("AAEC", "ed25519:"),
        ("ed25519:!!", "not valid base64"),
        ("ed25519:" + base64.b64encode(b"short").decode(), "32 bytes"),
    ):
        with pytest.raises(ValueError, match=says):
            parse_public_key(bad)


def _signed(private: Ed25519PrivateKey, manifest: dict[str, Any]) -> dict[str, Any]:
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    body = signed_bytes(ReleaseManifest.from_json(manifest))
    return {
        "manifest": manifest,
        "keyId": key_id(public),
        "signature": base64.b64encode(private.sign(body)).decode(),
    }


MANIFEST = {
    "name": "monitoring-ws-agent",
    "version": "1.2.3",
    "platform": "linux-x86_64",
    "artifact": "monitoring-ws-agent-1.2.3-linux-x86_64.pyz",
    "sha256": "ab" * 32,
    "size": 1000,
    "published": 1767225600,
}


def test_a_manifest_is_installed_only_as_signed_by_a_trusted_key() -> None:
    private, stranger = Ed25519PrivateKey.generate(), Ed25519PrivateKey.generate()
    trusted = [
        private.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
    ]
    document = _signed(private, MANIFEST)
    assert check_signed_manifest(document, trusted).version == "1.2.3"
    changed = json.loads(json.dumps(document))
    changed["manifest"]["sha256"] = "cd" * 32
    for bad, code in (
        (changed, "release_signature_invalid"),
        (_signed(stranger, MANIFEST), "release_key_untrusted"),
        ({**document, "signature": "%%%"}, "release_signature_invalid"),
        ({**document, "manifest": {**MANIFEST, "artifact": "../../etc/passwd"}}, "invalid"),
        ({**document, "manifest": {**MANIFEST, "size": -1}}, "release_manifest_invalid"),
        ({**document, "manifest": {**MANIFEST, "size": True}}, "release_manifest_invalid"),
        ({**document, "manifest": {**MANIFEST, "size": 1 << 40}}, "release_manifest_invalid"),
        ({**document, "manifest": {**MANIFEST, "name": "other"}}, "release_manifest_invalid"),
        ([], "release_manifest_invalid"),
    ):
        with pytest.raises(ReleaseRefusedError) as refused:
            check_signed_manifest(bad, trusted)
        assert code in refused.value.code


def test_the_documented_release_vector_verifies() -> None:
    """tests/data/release-vector.json: what docs/install.md gives third parties."""
    vector = json.loads((REPO / "tests/data/release-vector.json").read_text())
    key = parse_public_key(vector["publicKey"])
    manifest = ReleaseManifest.from_json(vector["document"]["manifest"])
    assert signed_bytes(manifest).decode() == vector["signedBytes"]
    assert check_signed_manifest(vector["document"], [key]) == manifest
    assert key_id(key) == vector["document"]["keyId"]


def _fake_artifact(where: Path, version: str) -> Path:
    """A zipapp-shaped file that says it is ``version`` (enough to publish and serve)."""
    artifact = where / f"monitoring-ws-agent-{version}-{platform_tag()}.pyz"
    with zipfile.ZipFile(artifact, "w") as archive:
        archive.writestr("site-packages/monitoring_ws/__init__.py", f'__version__ = "{version}"\n')
    return artifact


@pytest.mark.usefixtures("agent_listener")
async def test_releases_and_install_sh_are_served_on_both_listeners(
    start_server: StartServer, tmp_path: Path
) -> None:
    releases = tmp_path / "releases"
    key = tmp_path / "release.pem"
    made = run_cli("release", "key", str(key), cwd=tmp_path, env=isolated_env())
    public = made.stdout.splitlines()[-1]
    running = await start_server(releases_dir=str(releases), release_keys=(public,))
    async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as api:
        none = await api.get("/install.sh")
        assert none.status_code == 503
        assert "release publish" in none.json()["error"]["message"]
        artifact = _fake_artifact(tmp_path, "2.0.0")
        published = run_cli(
            "release", "publish", str(artifact), "--key", str(key), "--releases-dir",
            str(releases), cwd=tmp_path, env=isolated_env(),
        )  # fmt: skip
        assert published.returncode == 0, published.stderr
        # A directory nobody signed is not offered (and says why in the log).
        forged = releases / "3.0.0"
        shutil.copytree(releases / "2.0.0", forged)
        script = await api.get("/install.sh")
        assert script.status_code == 200
        assert script.headers["content-type"].startswith("text/x-shellscript")
        digest = hashlib.sha256(artifact.read_bytes()).hexdigest()
        assert f"version='2.0.0'; file='{artifact.name}'; sha256='{digest}'" in script.text
        assert "3.0.0" not in script.text
        bad_host = await api.get("/install.sh", headers={"Host": "evil'$(id)"})
        assert bad_host.status_code == 400
        assert (await api.post("/install.sh")).status_code == 405
    base = running.agent_urls[0].replace("ws://", "http://").rsplit("/", 1)[0]
    async with httpx.AsyncClient(base_url=base, timeout=30) as agents:
        listing = (await agents.get("/agent/releases/")).json()
        assert [r["version"] for r in listing["releases"]] == ["2.0.0"]
        assert listing["releaseKeys"] == [public]
        document = (await agents.get("/agent/releases/2.0.0/manifest.json")).json()
        assert check_signed_manifest(document, [parse_public_key(public)]).sha256 == digest
        got = await agents.get(f"/agent/releases/2.0.0/{artifact.name}")
        assert got.content == artifact.read_bytes()
        for missing in ("/agent/releases/3.0.0/manifest.json", "/agent/releases/2.0.0/../x"):
            assert (await agents.get(missing)).status_code == 404


async def test_an_agent_installed_by_pip_does_not_update_itself(
    start_server: StartServer, tmp_path: Path
) -> None:
    """No launcher, no self-update: the refusal names how it was installed."""
    running = await start_server()
    release_keys = ["ed25519:" + base64.b64encode(bytes(32)).decode()]
    async with trio.open_nursery() as nursery:
        url = running.agent_urls[0]
        await connected_agent(nursery, url, "pip-1", tmp_path / "agent", releaseKeys=release_keys)
        async with httpx.AsyncClient(base_url=running.api_url, timeout=30) as api:
            answer = await api.post(
                "/api/agents/pip-1/commands", json={"command": "update", "args": {"version": "9"}}
            )
        nursery.cancel_scope.cancel()
    assert answer.json()["error"]["code"] == "update_unsupported"
    assert "pip install -U monitoring-ws" in answer.json()["error"]["message"]


def _script(tmp_path: Path) -> Path:
    """install.sh as a server renders it for one release (nothing is downloaded here)."""
    manifest = ReleaseManifest("2.0.0", platform_tag(), "a.pyz", "ab" * 32, 1, 0)
    release = Release(manifest, b"{}", tmp_path / "a.pyz")
    text = render_install_script("http://127.0.0.1:1", "http://127.0.0.1:1", "", {
        platform_tag(): release,
    })  # fmt: skip
    script = tmp_path / "install.sh"
    script.write_text(text)
    return script


def _fake(bin_dir: Path, name: str, body: str) -> None:
    bin_dir.mkdir(exist_ok=True)
    (bin_dir / name).write_text(f"#!/bin/sh\n{body}\n")
    (bin_dir / name).chmod(0o755)


@pytest.mark.parametrize(
    ("fake", "body", "says"),
    [
        ("uname", "echo Darwin", "runs on Linux, not Darwin"),
        ("uname", '[ "$1" = -m ] && echo riscv64 || echo Linux', "no agent release for riscv64"),
        ("python3", "exit 1", "Python 3.11 or newer is needed"),
    ],
)
def test_install_sh_refuses_an_unsupported_system_with_the_fix(
    tmp_path: Path, fake: str, body: str, says: str
) -> None:
    script = _script(tmp_path)
    _fake(tmp_path / "bin", fake, body)
    env = isolated_env(PATH=f"{tmp_path / 'bin'}:/usr/bin:/bin")
    done = subprocess.run(
        ["sh", script, "--prefix", tmp_path / "p"], capture_output=True, text=True, env=env,
        check=False,
    )  # fmt: skip
    assert done.returncode == 1
    assert says in done.stderr
    assert not (tmp_path / "p").exists()  # nothing installed
    assert subprocess.run(["sh", "-n", script], check=False).returncode == 0


def test_install_sh_says_what_its_options_are(tmp_path: Path) -> None:
    script = _script(tmp_path)
    for args, code, says in ((["--help"], 0, "--prefix DIR"), (["--bogus"], 1, "unknown option")):
        done = subprocess.run(["sh", script, *args], capture_output=True, text=True, check=False)
        assert done.returncode == code
        assert says in done.stdout + done.stderr


@pytest.mark.parametrize(("deadline", "runs"), [(1, "1.0"), (9_999_999_999, "2.0")])
def test_the_launcher_rolls_back_a_release_whose_deadline_passed(
    tmp_path: Path, deadline: int, runs: str
) -> None:
    """A release that could not even start (no agent left to roll itself back): the
    launcher's next start switches to the old release once the trial's deadline passed,
    and not before."""
    home = tmp_path / "home"
    for version in ("1.0", "2.0"):
        (home / "releases" / version).mkdir(parents=True)
        (home / "releases" / version / "monitoring-ws-agent.pyz").write_text(version)
    (home / "current").symlink_to("releases/2.0")
    (home / "update").mkdir()
    (home / "update" / "pending").write_text(f"{deadline} 1.0 2.0\n")
    python = tmp_path / "python"  # prints the artifact it was asked to run
    python.write_text('#!/bin/sh\ncat "$1"\n')
    python.chmod(0o755)
    launcher = tmp_path / "monitoring-ws-agent"
    launcher.write_text(render_launcher(home, str(python), launcher))
    launcher.chmod(0o755)
    done = subprocess.run([launcher, "agent"], capture_output=True, text=True, check=False)
    assert done.stdout == runs, done.stderr
    if runs == "1.0":
        assert os.readlink(home / "current") == "releases/1.0"
        assert (home / "update" / "last").read_text().startswith("rolled_back 1.0 2.0")
        assert not (home / "update" / "pending").exists()
        assert "rolled back to 1.0" in done.stderr
    else:
        assert (home / "update" / "pending").exists()  # still on trial
