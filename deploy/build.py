"""Build the single-file agent (a shiv zipapp) and the Debian package: ``./dev package``.

The zipapp holds the monitoring-ws wheel and the agent's dependencies (``[project]
dependencies`` and theirs) copied from the environment this runs in, the one the test suite
passed in: nothing is downloaded. psutil is compiled, so the artifact is for this platform
(its name says which) and any Python >= 3.11 there. The .deb installs it under
/usr/lib/monitoring-ws-agent with the launcher, the unit and a system user
(docs/install.md).

    python deploy/build.py [--out DIR] [--wheel FILE] [--set-version V] [--no-deb]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import tomllib
import zipfile
from importlib import metadata
from pathlib import Path

from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from monitoring_ws.install.layout import (
    AGENT_USER,
    ARTIFACT_FILE,
    platform_tag,
    render_launcher,
    render_unit,
)

REPO = Path(__file__).resolve().parents[1]
DEB_LIB = Path("/usr/lib/monitoring-ws-agent")
DEB_HOME = Path("/var/lib/monitoring-ws-agent")
DEB_LAUNCHER = Path("/usr/bin/monitoring-ws-agent")
DEB_CONFIG = Path("/etc/monitoring-ws/agent.json")
#: The artifact's timestamps (shiv --reproducible): the same inputs give the same bytes.
SOURCE_DATE_EPOCH = "1767225600"


def closure(names: list[str]) -> list[str]:
    """The distributions ``names`` need, theirs included (markers of this Python)."""
    found: list[str] = []
    todo = list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in found:
            continue
        found.append(name)
        for written in metadata.distribution(name).requires or ():
            requirement = Requirement(written)
            if requirement.marker is None or requirement.marker.evaluate({"extra": ""}):
                todo.append(requirement.name)
    return sorted(found)


def copy_distribution(name: str, site: Path) -> None:
    """An installed distribution's files (modules and metadata) into ``site``."""
    dist = metadata.distribution(name)
    for file in dist.files or ():
        if file.parts[0] in {"..", "__pycache__"} or "__pycache__" in file.parts:
            continue  # scripts outside site-packages, bytecode (shiv compiles on unpack)
        source = Path(str(file.locate()))
        if source.is_file():
            target = site / file
            target.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, target)


def build_wheel(out: Path) -> Path:
    subprocess.run(
        [sys.executable, "-m", "build", "--wheel", "--no-isolation", "--outdir", out, REPO],
        check=True,
        capture_output=True,
    )
    [wheel] = out.glob("monitoring_ws-*.whl")
    return wheel


def set_version(site: Path, version: str) -> None:
    """Stamp ``version`` into the unpacked package (a build for tests and canaries)."""
    init = site / "monitoring_ws" / "__init__.py"
    text = re.sub(r'__version__ = "[^"]*"', f'__version__ = "{version}"', init.read_text())
    init.write_text(text)
    [meta] = site.glob("monitoring_ws-*.dist-info/METADATA")
    meta.write_text(re.sub(r"(?m)^Version: .*$", f"Version: {version}", meta.read_text()))


def package_version(site: Path) -> str:
    text = (site / "monitoring_ws" / "__init__.py").read_text()
    match = re.search(r'__version__ = "([^"]+)"', text)
    assert match is not None
    return match.group(1)


def build_zipapp(wheel: Path, out: Path, work: Path, version: str | None) -> tuple[Path, str]:
    site = work / "site"
    with zipfile.ZipFile(wheel) as archive:
        archive.extractall(site)
    if version is not None:
        set_version(site, version)
    declared = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    for name in closure([Requirement(written).name for written in declared]):
        copy_distribution(name, site)
    version = package_version(site)
    target = out / f"monitoring-ws-agent-{version}-{platform_tag()}.pyz"
    shiv = Path(sys.executable).with_name("shiv")
    subprocess.run(
        [
            shiv,
            "--site-packages",
            site,
            "--entry-point",
            "monitoring_ws.cli:main",
            "--python",
            "/usr/bin/env python3",
            "--output-file",
            target,
            "--compressed",
            "--reproducible",
        ],
        check=True,
        capture_output=True,
        env={**os.environ, "SOURCE_DATE_EPOCH": SOURCE_DATE_EPOCH},
    )
    return target, version


_CONTROL = """\
Package: monitoring-ws-agent
Version: {version}
Architecture: {arch}
Maintainer: monitoring-ws maintainers <noreply@localhost>
Depends: python3 (>= 3.11), adduser
Section: admin
Priority: optional
Description: monitoring-ws agent: signed outbound WebSocket to the monitoring server
 Dials out to the monitoring server, streams metrics and logs, and runs the commands it
 is allowed to. Enroll with a join token: docs/install.md.
"""

_POSTINST = f"""\
#!/bin/sh
# monitoring-ws-agent postinst: the system user, the settings file, the unit.
set -e
if [ "$1" = configure ]; then
  if ! getent passwd {AGENT_USER} >/dev/null; then
    adduser --system --group --home {DEB_HOME} --no-create-home {AGENT_USER} >/dev/null
  fi
  install -d -m 0700 -o {AGENT_USER} -g {AGENT_USER} {DEB_HOME}
  install -d -m 0755 {DEB_CONFIG.parent}
  if [ ! -e {DEB_CONFIG} ]; then
    (umask 077 && printf '{{}}\\n' >{DEB_CONFIG})
  fi
  chmod 0600 {DEB_CONFIG}
  # A package upgrade replaces a self-update: the packaged artifact runs again.
  rm -f {DEB_HOME}/current
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload >/dev/null || true
    systemctl enable monitoring-ws-agent.service >/dev/null || true
    # Started once enrolled (agent.json holds a key); an upgrade restarts it.
    if grep -q '"wsAgentKey"\\|"wsSecret"' {DEB_CONFIG}; then
      systemctl restart monitoring-ws-agent.service || true
    fi
  fi
fi
exit 0
"""

_PRERM = """\
#!/bin/sh
set -e
if [ "$1" = remove ] && [ -d /run/systemd/system ]; then
  systemctl stop monitoring-ws-agent.service >/dev/null || true
fi
exit 0
"""

_POSTRM = f"""\
#!/bin/sh
# The outbox and releases in {DEB_HOME} survive removal and upgrades; purge deletes them.
set -e
if [ "$1" = purge ]; then
  rm -rf {DEB_HOME} /var/cache/monitoring-ws-agent {DEB_CONFIG}
  if getent passwd {AGENT_USER} >/dev/null && command -v deluser >/dev/null; then
    deluser --system {AGENT_USER} >/dev/null || true
  fi
fi
if [ -d /run/systemd/system ]; then
  systemctl daemon-reload >/dev/null || true
fi
exit 0
"""


def _write(path: Path, text: str | bytes, mode: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text)
    path.chmod(mode)


def build_deb(pyz: Path, version: str, out: Path, work: Path) -> Path:
    root = work / "deb"
    arch = subprocess.run(
        ["dpkg", "--print-architecture"], check=True, capture_output=True, text=True
    ).stdout.strip()
    _write(root / DEB_LIB.relative_to("/") / ARTIFACT_FILE, pyz.read_bytes(), 0o644)
    launcher = render_launcher(
        DEB_HOME, "/usr/bin/python3", DEB_LAUNCHER, packaged=str(DEB_LIB / ARTIFACT_FILE)
    )
    _write(root / DEB_LAUNCHER.relative_to("/"), launcher, 0o755)
    unit = render_unit(DEB_LAUNCHER, config=DEB_CONFIG)
    _write(root / "lib/systemd/system/monitoring-ws-agent.service", unit, 0o644)
    debian_version = version.replace("-", "~")
    _write(root / "DEBIAN/control", _CONTROL.format(version=debian_version, arch=arch), 0o644)
    for name, text in (("postinst", _POSTINST), ("prerm", _PRERM), ("postrm", _POSTRM)):
        _write(root / "DEBIAN" / name, text, 0o755)
    target = out / f"monitoring-ws-agent_{debian_version}_{arch}.deb"
    subprocess.run(
        ["dpkg-deb", "--root-owner-group", "-Zxz", "--build", root, target],
        check=True,
        capture_output=True,
    )
    return target


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist", help="default: dist/")
    parser.add_argument("--wheel", type=Path, help="a monitoring-ws wheel (default: build one)")
    parser.add_argument("--set-version", metavar="V", help="stamp another version in")
    parser.add_argument("--no-deb", action="store_true", help="only the zipapp")
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="monitoring-ws-build-") as scratch:
        work = Path(scratch)
        wheel = args.wheel or build_wheel(work)
        pyz, version = build_zipapp(wheel, args.out, work, args.set_version)
        built = {"zipapp": str(pyz), "sha256": hashlib.sha256(pyz.read_bytes()).hexdigest()}
        if not args.no_deb:
            built["deb"] = str(build_deb(pyz, version, args.out, work))
    print(json.dumps(built))
    return 0


if __name__ == "__main__":
    sys.exit(main())
