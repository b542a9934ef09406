"""Blocks on disk: one JSON line per block in DATA_DIR/chain.jsonl, genesis first."""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path
from typing import Any

from openswarm.ledger.canonical import canonical_bytes

CHAIN_FILE = "chain.jsonl"


class StoreError(RuntimeError):
    """The stored chain disagrees with what is being committed, or cannot be read."""


class ChainStore:
    """Append-only block file kept in step with the replicated state.

    On restart Raft replays its journal from the start, so blocks arrive again: a block whose
    height is already stored must match it byte for byte, and is not written twice.
    """

    def __init__(self, data_dir: Path | str) -> None:
        self.path = Path(data_dir) / CHAIN_FILE
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._stored_hashes: list[str] = [b["hash"] for b in read_chain(self.path)]
        self._file = open(self.path, "ab")  # noqa: SIM115 - held open for the store's life

    @property
    def stored_height(self) -> int:
        return len(self._stored_hashes) - 1

    def append(self, block: dict[str, Any]) -> bool:
        """Store `block`; False if it was stored already (a replay after restart)."""
        with self._lock:
            height = block["height"]
            if height < len(self._stored_hashes):
                if self._stored_hashes[height] != block["hash"]:
                    raise StoreError(
                        f"{self.path}: stored block {height} differs from the replicated one; "
                        "the file was altered or belongs to another ledger — run "
                        "'openswarm ledger verify' on it and move it away to resync"
                    )
                return False
            if height != len(self._stored_hashes):
                raise StoreError(f"{self.path}: block {height} arrived before its predecessor")
            self._file.write(canonical_bytes(block) + b"\n")
            self._file.flush()
            self._stored_hashes.append(block["hash"])
            return True

    def sync(self) -> None:
        with self._lock:
            os.fsync(self._file.fileno())

    def close(self) -> None:
        with self._lock:
            self._file.close()


def read_chain(path: Path | str) -> list[dict[str, Any]]:
    """Read every block of a chain file (empty list when the file does not exist)."""
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
                raise StoreError(f"{path}: line {number} is not a JSON block ({exc})") from exc
            if not isinstance(block, dict) or "hash" not in block or "height" not in block:
                raise StoreError(f"{path}: line {number} is not a block")
            blocks.append(block)
    return blocks
