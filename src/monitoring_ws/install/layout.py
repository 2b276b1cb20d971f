"""Where an installed agent lives (docs/install.md, "Layout"), shared by the Debian package,
install.sh (rendered by the server) and the agent's self-update.

``home`` (``/var/lib/monitoring-ws-agent``, the unit's ``StateDirectory``) holds::

    releases/<version>/monitoring-ws-agent.pyz   verified artifacts
    current -> releases/<version>                the one the launcher runs
    update/pending                               "<deadline> <from> <to>" during a trial
    update/last                                  how the last update ended

``from`` is a release directory's name, or ``-`` for the packaged artifact. The launcher
(``launcher.sh``) exports ``MONITORING_WS_HOME`` and ``MONITORING_WS_LAUNCHER``: an agent
started without them was installed some other way (pip) and does not update itself.
"""

from __future__ import annotations

import os
import platform
import re
import sys
from importlib import resources
from pathlib import Path

import attrs

__all__ = [
    "AGENT_USER",
    "ARTIFACT_FILE",
    "HOME_ENV",
    "LAUNCHER_ENV",
    "AgentHome",
    "platform_tag",
    "render_launcher",
    "render_unit",
    "template",
]

ARTIFACT_FILE = "monitoring-ws-agent.pyz"
HOME_ENV = "MONITORING_WS_HOME"
LAUNCHER_ENV = "MONITORING_WS_LAUNCHER"
#: The system user the package and install.sh create for the agent.
AGENT_USER = "monitoring-ws-agent"
PACKAGED = "-"


def template(name: str) -> str:
    """A file shipped beside this module (the launcher, the unit, install.sh)."""
    return (resources.files(__package__) / name).read_text(encoding="utf-8")


def platform_tag() -> str:
    """``linux-x86_64``: what an artifact built here runs on (psutil is compiled)."""
    return f"{sys.platform}-{platform.machine().lower()}"


def _quoted(value: str) -> str:
    if "'" in value or "\n" in value:
        raise ValueError(f"a path with a quote or a newline cannot go in the launcher: {value!r}")
    return value


def render_launcher(home: Path, python: str, launcher: Path, packaged: str = "") -> str:
    """The launcher script for this layout (values are single-quoted in it)."""
    text = template("launcher.sh")
    for name, value in (
        ("@HOME@", str(home)),
        ("@PYTHON@", python),
        ("@LAUNCHER@", str(launcher)),
        ("@PACKAGED@", packaged),
    ):
        text = text.replace(name, _quoted(value))
    return text


def render_unit(launcher: Path, *, config: Path, user: str = AGENT_USER) -> str:
    """The agent's unit (``monitoring-ws-agent.service``) for an installed layout: the
    launcher runs it, as ``user``, with the settings file ``config`` as its credential."""
    lines = []
    for line in template("monitoring-ws-agent.service").splitlines():
        out = line
        if line.startswith(("# Install:", "# (root, mode 0600)")):
            continue
        if line.startswith("ExecStart="):
            out = f"ExecStart={launcher} agent --config %d/agent.json"
        elif line.startswith("LoadCredential="):
            out = f"LoadCredential=agent.json:{config}"
        elif line == "DynamicUser=yes":
            out = f"User={user}\nGroup={user}"
        elif line.startswith("StateDirectory="):
            # Releases are unpacked (shiv) into the cache directory, once per build.
            out += "\nCacheDirectory=monitoring-ws-agent\nCacheDirectoryMode=0700"
        lines.append(out)
    return "\n".join(lines) + "\n"


@attrs.frozen
class AgentHome:
    """An installed agent's directory, and the launcher that runs it."""

    root: Path
    launcher: Path

    @classmethod
    def from_environment(cls) -> AgentHome | None:
        """The layout the launcher announced, or None (not installed by the launcher)."""
        root, launcher = os.environ.get(HOME_ENV), os.environ.get(LAUNCHER_ENV)
        if not root or not launcher:
            return None
        return cls(Path(root), Path(launcher))

    @property
    def releases(self) -> Path:
        return self.root / "releases"

    @property
    def current(self) -> Path:
        return self.root / "current"

    @property
    def pending(self) -> Path:
        return self.root / "update" / "pending"

    @property
    def last(self) -> Path:
        return self.root / "update" / "last"

    def running(self) -> str:
        """The release directory ``current`` names, or ``-`` (the packaged artifact)."""
        try:
            target = os.readlink(self.current)
        except OSError:
            return PACKAGED
        return Path(target).name

    def point_current_at(self, release: str) -> None:
        """Switch ``current`` atomically (a new link renamed over the old)."""
        if release == PACKAGED:
            self.current.unlink(missing_ok=True)
            return
        staged = self.root / "current.new"
        staged.unlink(missing_ok=True)
        staged.symlink_to(Path("releases") / release)
        staged.replace(self.current)

    def read_pending(self) -> tuple[float, str, str] | None:
        """(deadline, from, to) of an update on trial, or None."""
        try:
            fields = self.pending.read_text(encoding="ascii").split()
        except (OSError, ValueError):
            return None
        if len(fields) != 3 or not re.fullmatch(r"\d{1,12}", fields[0]):
            return None
        return float(fields[0]), fields[1], fields[2]

    def write_pending(self, deadline: float, old: str, new: str) -> None:
        self.pending.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        staged = self.pending.with_suffix(".new")
        staged.write_text(f"{int(deadline)} {old} {new}\n", encoding="ascii")
        staged.replace(self.pending)

    def finish(self, outcome: str, old: str, new: str, when: float) -> None:
        """Close the trial: ``updated`` or ``rolled_back``, kept in ``update/last``."""
        self.last.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.last.write_text(f"{outcome} {old} {new} {int(when)}\n", encoding="ascii")
        self.pending.unlink(missing_ok=True)
