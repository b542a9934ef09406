"""Saved experiments: a training run's record from the ledger, with a user's title and note,
kept in one JSON file so that runs of different swarms can be compared later."""

from __future__ import annotations

import copy
import fcntl
import json
import os
import secrets
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

MAX_TITLE = 200
MAX_NOTE = 10_000
MAX_SAVED = 1_000


class ExperimentError(ValueError):
    """A save or an annotation the store refuses; the message says why."""


class ExperimentStore:
    """The experiments saved in `path` (created on the first save)."""

    def __init__(self, path: Path | str) -> None:
        self.path = Path(path).expanduser()
        self._lock = threading.Lock()
        self._cache: tuple[tuple[int, int, int], list[dict[str, Any]]] | None = None

    def list(self) -> list[dict[str, Any]]:
        """The saved experiments (shared with later calls: do not change them)."""
        if not self.path.exists():
            return []
        with self._lock, self._file_lock():
            return self._read(shared=True)

    def save(
        self, record: dict[str, Any], *, title: str, note: str = "", swarm: str | None
    ) -> dict[str, Any]:
        """Keep `record` (see views.run_record) under a new id with its title and note."""
        title, note = _checked_title(title), _checked_text(note, "note", MAX_NOTE)
        entry = {
            "id": secrets.token_hex(6),
            "title": title,
            "note": note,
            "swarm": swarm,
            "saved_at": time.time(),
            "record": record,
        }
        with self._lock, self._file_lock():
            saved = self._read()
            if len(saved) >= MAX_SAVED:
                raise ExperimentError(
                    f"{self.path} already holds {MAX_SAVED} experiments; "
                    "delete some before saving more"
                )
            saved.append(entry)
            self._write(saved)
        return entry

    def annotate(
        self, experiment_id: str, *, title: str | None = None, note: str | None = None
    ) -> dict[str, Any]:
        """Change a saved experiment's title or note."""
        with self._lock, self._file_lock():
            saved = self._read()
            for entry in saved:
                if entry["id"] == experiment_id:
                    if title is not None:
                        entry["title"] = _checked_title(title)
                    if note is not None:
                        entry["note"] = _checked_text(note, "note", MAX_NOTE)
                    self._write(saved)
                    return entry
        raise ExperimentError(f"no saved experiment with id {experiment_id!r}")

    def delete(self, experiment_id: str) -> None:
        with self._lock, self._file_lock():
            saved = self._read()
            kept = [e for e in saved if e["id"] != experiment_id]
            if len(kept) == len(saved):
                raise ExperimentError(f"no saved experiment with id {experiment_id!r}")
            self._write(kept)

    @contextmanager
    def _file_lock(self) -> Iterator[None]:
        """Other dashboards may share the file: one reads or changes it at a time."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self.path.with_name(self.path.name + ".lock"), "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self, *, shared: bool = False) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        stamp = self.path.stat()
        key = (stamp.st_mtime_ns, stamp.st_size, stamp.st_ino)
        if self._cache is not None and self._cache[0] == key:
            return self._cache[1] if shared else copy.deepcopy(self._cache[1])
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise ExperimentError(
                f"{self.path} is not a readable experiments file ({exc}); move it aside "
                "or pass another --experiments file"
            ) from exc
        if not isinstance(data, dict) or not isinstance(data.get("experiments"), list):
            raise ExperimentError(
                f"{self.path} is not an experiments file (no 'experiments' list); move it "
                "aside or pass another --experiments file"
            )
        self._cache = (key, data["experiments"])
        return data["experiments"] if shared else copy.deepcopy(data["experiments"])

    def _write(self, saved: list[dict[str, Any]]) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle, fresh = tempfile.mkstemp(
            prefix=f".{self.path.name}.", suffix=".tmp", dir=self.path.parent
        )
        try:
            with os.fdopen(handle, "w", encoding="utf-8") as out:
                json.dump({"experiments": saved}, out, indent=1)
            os.replace(fresh, self.path)
        except BaseException:
            Path(fresh).unlink(missing_ok=True)
            raise
        self._cache = None


def _checked_text(value: Any, what: str, limit: int) -> str:
    if not isinstance(value, str):
        raise ExperimentError(f"the {what} must be text")
    if len(value) > limit:
        raise ExperimentError(f"the {what} has {len(value)} characters; at most {limit} fit")
    return value


def _checked_title(value: Any) -> str:
    title = _checked_text(value, "title", MAX_TITLE)
    if not title.strip():
        raise ExperimentError("an experiment needs a title: name what this run tried")
    return title
