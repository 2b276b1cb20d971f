"""Shell sessions recorded in asciicast v2 (what asciinema and Teleport use), one file per
session in ``state_dir/recordings``, each with a small JSON file beside it that says who,
which agent, when and how many bytes. Bounded: a recording stops growing at
``recording_max_bytes`` (a marker says so), and the oldest go once all of them pass
``recordings_max_bytes`` or there are more than ``MAX_RECORDINGS``.

Only what the shell wrote is recorded ("o" events) and the terminal's resizes ("r");
keystrokes are not (a password typed at a prompt that does not echo stays unrecorded).
"""

from __future__ import annotations

import codecs
import json
import os
import re
import time
import uuid
from pathlib import Path
from typing import IO, Any

__all__ = ["MAX_RECORDINGS", "Recording", "Recordings"]

MAX_RECORDINGS = 10_000
RECORDING_ID = re.compile(r"[0-9a-f]{32}")


class Recording:
    """One session being recorded."""

    def __init__(self, store: Recordings, recording_id: str, meta: dict[str, Any]) -> None:
        self._store = store
        self.id = recording_id
        self.meta = meta
        self._started = time.monotonic()
        self._decoder = codecs.getincrementaldecoder("utf-8")("replace")
        self._written = 0
        self._file: IO[str] | None = _open_private(store.cast_path(recording_id))
        header = {
            "version": 2,
            "width": meta["cols"],
            "height": meta["rows"],
            "timestamp": meta["startedAt"] // 1000,
            "env": {"TERM": meta["term"]},
            "title": f"{meta['agentId']} ({meta.get('requestedBy') or 'unknown'})",
        }
        self._line(header)
        store.save_meta(recording_id, meta)

    def output(self, data: bytes) -> None:
        """What the shell wrote."""
        text = self._decoder.decode(data)
        if text:
            self._event("o", text)

    def resize(self, cols: int, rows: int) -> None:
        self._event("r", f"{cols}x{rows}")

    def finish(self, *, bytes_in: int, bytes_out: int, exit_code: int | None, reason: str) -> None:
        """Close the file and write the totals beside it."""
        tail = self._decoder.decode(b"", final=True)
        if tail:
            self._event("o", tail)
        if self._file is not None:
            self._file.close()
            self._file = None
        self.meta.update(
            endedAt=int(time.time() * 1000),
            bytesIn=bytes_in,
            bytesOut=bytes_out,
            exitCode=exit_code,
            reason=reason,
            size=self._written,
        )
        self._store.save_meta(self.id, self.meta)

    def _event(self, kind: str, data: str) -> None:
        if self._file is None:
            return
        if self._written >= self._store.max_bytes_each:
            self.meta["truncated"] = True
            self._line([self._elapsed(), "m", "recording stopped: recording_max_bytes"])
            self._file.close()
            self._file = None
            return
        self._line([self._elapsed(), kind, data])

    def _elapsed(self) -> float:
        return round(time.monotonic() - self._started, 6)

    def _line(self, value: Any) -> None:
        if self._file is None:
            return
        text = json.dumps(value, ensure_ascii=False, separators=(", ", ": ")) + "\n"
        self._file.write(text)
        self._written += len(text)


class Recordings:
    """The recordings directory."""

    def __init__(self, directory: Path, *, max_bytes: int, max_bytes_each: int) -> None:
        self.directory = directory
        self.max_bytes = max_bytes
        self.max_bytes_each = max_bytes_each

    def cast_path(self, recording_id: str) -> Path:
        return self.directory / f"{recording_id}.cast"

    def _meta_path(self, recording_id: str) -> Path:
        return self.directory / f"{recording_id}.json"

    def start(
        self, *, agent_id: str, requested_by: str | None, cols: int, rows: int, term: str
    ) -> Recording:
        self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
        self.prune()
        recording_id = uuid.uuid4().hex
        meta = {
            "id": recording_id,
            "agentId": agent_id,
            "requestedBy": requested_by,
            "startedAt": int(time.time() * 1000),
            "cols": cols,
            "rows": rows,
            "term": term,
        }
        return Recording(self, recording_id, meta)

    def save_meta(self, recording_id: str, meta: dict[str, Any]) -> None:
        path = self._meta_path(recording_id)
        with _open_private(path.with_suffix(".tmp")) as file:
            json.dump(meta, file)
        path.with_suffix(".tmp").replace(path)

    def list(self) -> list[dict[str, Any]]:
        """Every recording's facts, newest first."""
        found = []
        if not self.directory.is_dir():
            return []
        for path in self.directory.glob("*.json"):
            try:
                found.append(json.loads(path.read_text(encoding="utf-8")))
            except (OSError, ValueError):
                continue
        return sorted(found, key=lambda meta: -int(meta.get("startedAt", 0)))

    def find(self, recording_id: str) -> tuple[dict[str, Any], Path] | None:
        """A recording's facts and its file (None for an id not here)."""
        if not RECORDING_ID.fullmatch(recording_id):
            return None
        try:
            meta = json.loads(self._meta_path(recording_id).read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        cast = self.cast_path(recording_id)
        return (meta, cast) if cast.is_file() else None

    def prune(self) -> int:
        """Delete the oldest recordings past the bounds; how many went."""
        entries = []
        for cast in self.directory.glob("*.cast"):
            try:
                stat = cast.stat()
            except OSError:
                continue
            entries.append((stat.st_mtime, stat.st_size, cast))
        entries.sort()
        total = sum(size for _, size, _ in entries)
        removed = 0
        while entries and (total > self.max_bytes or len(entries) >= MAX_RECORDINGS):
            _, size, cast = entries.pop(0)
            cast.unlink(missing_ok=True)
            cast.with_suffix(".json").unlink(missing_ok=True)
            total -= size
            removed += 1
        return removed


def _open_private(path: Path) -> IO[str]:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    return os.fdopen(descriptor, "w", encoding="utf-8")
