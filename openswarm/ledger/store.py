"""Blocks on disk: one JSON line per block in DATA_DIR/chain.jsonl, genesis first.

Each line also carries, under "position", where the block's record sits in the ordering
layer (an etcd revision, or the height for the embedded ledger). It is this node's
bookkeeping for resuming, outside the block's hash, and `read_chain` drops it.
"""

from __future__ import annotations

import json
import os
import threading
from array import array
from pathlib import Path
from typing import Any

from openswarm.ledger.canonical import canonical_bytes

CHAIN_FILE = "chain.jsonl"
POSITION = "position"


class StoreError(RuntimeError):
    """The stored chain disagrees with what is being committed, or cannot be read."""


class ChainStore:
    """Append-only block file of one ledger node."""

    def __init__(self, data_dir: Path | str, offsets: list[int] | None = None) -> None:
        """Open the chain file for appending; `offsets` are where each of its blocks starts,
        when the caller has just read it (else the file is read to find them)."""
        self.path = Path(data_dir) / CHAIN_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        if offsets is None:
            offsets = []
            read_chain(self.path, offsets=offsets)
        self._offsets = array("q", offsets)  # byte offset of each block's line, by height
        self._height = len(offsets) - 1
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the store's life
        self._end = self._file.tell()
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
            line = canonical_bytes({**block, POSITION: position}) + b"\n"
            self._file.write(line)
            self._offsets.append(self._end)
            self._end += len(line)
            self._height += 1

    def read(self, start: int, stop: int) -> list[dict[str, Any]]:
        """Stored blocks of heights start..stop-1 (what there is of them), read back from
        the file: a node keeps only recent blocks in memory."""
        with self._lock:
            stop = min(stop, self._height + 1)
            if start >= stop:
                return []
            self._file.flush()
            first = self._offsets[start]
        blocks = []
        with open(self.path, "rb") as handle:
            handle.seek(first)
            while len(blocks) < stop - start:
                line = handle.readline()
                if not line:
                    raise StoreError(f"{self.path}: ends before block {start + len(blocks)}")
                if line.strip():
                    block = json.loads(line)
                    block.pop(POSITION, None)
                    blocks.append(block)
        return blocks

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


def read_chain(
    path: Path | str, *, positions: list[int] | None = None, offsets: list[int] | None = None
) -> list[dict[str, Any]]:
    """Read every block of a chain file (empty list when the file does not exist); with
    `positions`, also collect each block's position (-1 where none is recorded), with
    `offsets` where each block's line starts in the file."""
    path = Path(path)
    if path.is_dir():
        path = path / CHAIN_FILE
    if not path.exists():
        return []
    blocks = []
    offset = 0
    with open(path, "rb") as handle:
        for number, line in enumerate(handle, start=1):
            start, offset = offset, offset + len(line)
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
            if offsets is not None:
                offsets.append(start)
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
