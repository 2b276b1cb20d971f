"""``monitoring-ws release key|publish|list``: signed agent releases (docs/install.md,
"Signed updates"); a subcommand the websocket plugin adds through ``monitoring_ws.cli``.

The release key signs; keep it off the server (``publish`` needs only the key file and
the release directory, which can be copied to the server afterwards). The server needs
only the public key, in ``release_keys``.
"""

from __future__ import annotations

import argparse
import base64
import hashlib
import json
import re
import shutil
import sys
import time
import zipfile
from pathlib import Path
from typing import Any

from ..configbase import add_config_option

__all__ = ["add"]

_ARTIFACT = re.compile(
    r"monitoring-ws-agent-(?P<version>.+)-(?P<platform>[a-z0-9]+-[a-z0-9_]+)\.pyz"
)
_VERSION_LINE = re.compile(rb'__version__ = "([^"]+)"')


def add(commands: Any) -> None:
    release = commands.add_parser("release", help="signed agent releases (install.sh, update)")
    actions = release.add_subparsers(dest="action", metavar="ACTION", required=True)
    key = actions.add_parser(
        "key",
        help="create a release key (prints its public key last: put it in release_keys)",
    )
    key.add_argument("file", type=Path, help="where the private key goes (mode 0600)")
    publish = actions.add_parser(
        "publish", help="sign an agent artifact (./dev package) into the release directory"
    )
    publish.add_argument("artifact", type=Path, help="monitoring-ws-agent-VERSION-PLATFORM.pyz")
    publish.add_argument("--key", type=Path, required=True, help="the release key's file")
    publish.add_argument("--force", action="store_true", help="replace a release of that version")
    listing = actions.add_parser("list", help="the releases the server would offer")
    for parser in (publish, listing):
        add_config_option(parser)
        parser.add_argument(
            "--releases-dir",
            type=Path,
            metavar="DIR",
            help="default: releases_dir, else releases/ in the server's state directory",
        )
    key.set_defaults(run=_key)
    publish.set_defaults(run=_publish)
    listing.set_defaults(run=_list)


def _fail(message: str) -> int:
    print(f"monitoring-ws release: {message}", file=sys.stderr)
    return 1


def _key(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    from ..private import write_private  # noqa: PLC0415

    if args.file.exists():
        return _fail(f"{args.file} exists: a release key is never overwritten")
    private = Ed25519PrivateKey.generate()
    pem = private.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    write_private(args.file, pem.decode())
    raw = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    print(f"wrote {args.file} (0600); its public key, for release_keys:")
    print("ed25519:" + base64.b64encode(raw).decode())
    return 0


def _releases_dir(args: argparse.Namespace) -> Path:
    if args.releases_dir is not None:
        return Path(args.releases_dir)
    from ..host.config import load_monitoring_config  # noqa: PLC0415
    from .config import gateway_config_of  # noqa: PLC0415

    return gateway_config_of(load_monitoring_config(args.config, {})).releases_path


def _artifact_version(artifact: Path) -> str | None:
    """The version the artifact's own monitoring_ws says it is."""
    with zipfile.ZipFile(artifact) as archive:
        for name in archive.namelist():
            if name.endswith("site-packages/monitoring_ws/__init__.py"):
                match = _VERSION_LINE.search(archive.read(name))
                return None if match is None else match.group(1).decode()
    return None


def _publish(args: argparse.Namespace) -> int:
    from cryptography.hazmat.primitives import serialization  # noqa: PLC0415
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey  # noqa: PLC0415

    from ..protocol.ed25519 import key_id  # noqa: PLC0415
    from ..protocol.release import ReleaseManifest, ReleaseRefusedError, signed_bytes  # noqa: PLC0415

    named = _ARTIFACT.fullmatch(args.artifact.name)
    if named is None:
        return _fail(f"{args.artifact.name}: expected monitoring-ws-agent-VERSION-PLATFORM.pyz")
    try:
        inside = _artifact_version(args.artifact)
        private = serialization.load_pem_private_key(args.key.read_bytes(), password=None)
    except (OSError, zipfile.BadZipFile, ValueError, TypeError) as exc:
        return _fail(str(exc))
    if not isinstance(private, Ed25519PrivateKey):
        return _fail(f"{args.key} is not an Ed25519 key (make one with `release key`)")
    if inside != named["version"]:
        return _fail(f"the artifact holds version {inside}, its name says {named['version']}")
    data = args.artifact.read_bytes()
    try:
        manifest = ReleaseManifest.from_json(
            ReleaseManifest(
                version=named["version"],
                platform=named["platform"],
                artifact=args.artifact.name,
                sha256=hashlib.sha256(data).hexdigest(),
                size=len(data),
                published=int(time.time()),
            ).to_json()
        )
    except ReleaseRefusedError as exc:
        return _fail(exc.message)
    public = private.public_key().public_bytes(
        serialization.Encoding.Raw, serialization.PublicFormat.Raw
    )
    document = {
        "manifest": manifest.to_json(),
        "keyId": key_id(public),
        "signature": base64.b64encode(private.sign(signed_bytes(manifest))).decode(),
    }
    root = _releases_dir(args)
    target = root / manifest.version
    if target.exists() and not args.force:
        return _fail(f"{target} exists: --force replaces it")
    staging = root / f".publish-{manifest.version}"
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    shutil.copyfile(args.artifact, staging / manifest.artifact)
    (staging / "manifest.json").write_text(json.dumps(document, indent=2) + "\n")
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    print(f"published {manifest.version} ({manifest.platform}) in {target}")
    return 0


def _list(args: argparse.Namespace) -> int:
    root = _releases_dir(args)
    rows = []
    for manifest_file in sorted(root.glob("*/manifest.json")):
        try:
            manifest = json.loads(manifest_file.read_text())["manifest"]
            rows.append(f"{manifest['version']}\t{manifest['platform']}\t{manifest['sha256']}")
        except (OSError, ValueError, KeyError, TypeError) as exc:
            rows.append(f"{manifest_file.parent.name}\t(unreadable: {exc})")
    print("\n".join(rows) if rows else f"no releases in {root}")
    return 0
