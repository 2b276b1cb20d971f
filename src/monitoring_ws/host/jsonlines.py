"""Append JSON lines to a file rotated by size (``name``, ``name.1`` ... ``name.N``),
created 0600: the audit log and the telemetry_file plugin write through it."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

__all__ = ["RotatingJsonLines"]


class RotatingJsonLines:
    """Blocking writes (call from a worker thread); past ``max_bytes`` the file becomes
    ``.1`` (``.1`` becomes ``.2``...), keeping ``backups`` of them."""

    def __init__(self, path: Path, *, max_bytes: int, backups: int) -> None:
        self.path, self.max_bytes, self.backups = path, max_bytes, backups

    def append(self, items: Iterable[Mapping[str, Any]]) -> None:
        data = "".join(json.dumps(item, separators=(",", ":")) + "\n" for item in items).encode()
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        try:
            size = self.path.stat().st_size
        except FileNotFoundError:
            size = 0
        if size and size + len(data) > self.max_bytes:
            self._rotate()
        fd = os.open(self.path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
        with os.fdopen(fd, "ab") as handle:
            handle.write(data)

    def _rotate(self) -> None:
        name = self.path.name
        self.path.with_name(f"{name}.{self.backups}").unlink(missing_ok=True)
        for number in range(self.backups - 1, 0, -1):
            older = self.path.with_name(f"{name}.{number}")
            if older.exists():
                older.rename(self.path.with_name(f"{name}.{number + 1}"))
        if self.backups:
            self.path.rename(self.path.with_name(f"{name}.1"))
        else:
            self.path.unlink()
