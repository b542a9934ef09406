"""Blocks on disk: one JSON line per block in DATA_DIR/chain.jsonl, genesis first.

Each line also carries, under "position", where the block's record sits in the ordering
layer (an etcd revision, or the height for the embedded ledger). It is this node's
bookkeeping for resuming, outside the block's hash, and `read_chain` drops it.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from openswarm.ledger.canonical import canonical_bytes

CHAIN_FILE = "chain.jsonl"
POSITION = "position"


class StoreError(RuntimeError):
    """The stored chain disagrees with what is being committed, or cannot be read."""


class ChainStore:
    """Append-only block file of one ledger node."""

    def __init__(self, data_dir: Path | str, stored_height: int | None = None) -> None:
        """Open the chain file for appending; `stored_height` is its last block's height,
        when the caller has just read it (else the file is read to find it)."""
        self.path = Path(data_dir) / CHAIN_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        if stored_height is None:
            stored_height = len(read_chain(self.path)) - 1
        self._height = stored_height
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the store's life
        os.chmod(self.path, 0o600)

    @property
    def stored_height(self) -> int:
        return self._height

    def append(self, block: dict[str, Any], position: int) -> None:
        """Store `block` (the next height), remembering its position in the ordering layer."""
        with self._lock:
            if block["height"] != self._height + 1:
                raise StoreError(
                    f"{self.path}: block {block['height']} does not follow stored block "
                    f"{self._height}"
                )
            self._file.write(canonical_bytes({**block, POSITION: position}) + b"\n")
            self._height += 1

    def flush(self, *, sync: bool) -> None:
        """Hand written blocks to the OS; with `sync`, also to the disk (fsync)."""
        with self._lock:
            self._file.flush()
            if sync:
                os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.flush()
            self._file.close()


def read_chain(path: Path | str, *, positions: list[int] | None = None) -> list[dict[str, Any]]:
    """Read every block of a chain file (empty list when the file does not exist); with
    `positions`, also collect each block's position (-1 where none is recorded)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHAIN_FILE
    if not path.exists():
        return []
    blocks = []
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                block = json.loads(line)
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                if not line.endswith(b"\n"):
                    break  # a last line cut short by a crash: never acknowledged, dropped
                raise StoreError(f"{path}: line {number} is not a JSON block ({exc})") from exc
            if not isinstance(block, dict) or "hash" not in block or "height" not in block:
                raise StoreError(f"{path}: line {number} is not a block")
            position = block.pop(POSITION, -1)
            if positions is not None:
                positions.append(position if isinstance(position, int) else -1)
            blocks.append(block)
    return blocks


def truncate_torn_tail(path: Path | str) -> None:
    """Cut a last line that a crash left without its newline (it was never acknowledged)."""
    path = Path(path)
    if path.is_dir():
        path = path / CHAIN_FILE
    if not path.exists():
        return
    data = path.read_bytes()
    if data and not data.endswith(b"\n"):
        with open(path, "r+b") as handle:
            handle.truncate(data.rfind(b"\n") + 1)
