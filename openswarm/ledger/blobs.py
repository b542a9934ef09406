"""A ledger node's store of program-bundle files, addressed by their sha256.

Admins upload a task's files here piece by piece (`put`), before or after the task that
names them; operators read them back (`get`) and check them against the task's digests on
the ledger, so a node that serves wrong bytes is caught by every reader. A file is stored
only once its bytes hash to the digest it was uploaded under. Nothing here is part of the
replicated state: each node keeps its own copy of the files it was given.
"""

from __future__ import annotations

import hashlib
import os
import re
import threading
from pathlib import Path

from openswarm.ledger.tasks import MAX_BUNDLE_BYTES

#: Largest piece of a file moved in one call (base64 in JSON stays well under a call's cap).
PIECE_BYTES = 512 << 10
#: Default space a node gives to stored files, all together.
DEFAULT_CAPACITY = 4 << 30
_DIGEST = re.compile(r"[0-9a-f]{64}")


class BlobError(ValueError):
    """An upload or read the store refuses; the message says why."""


class BlobStore:
    """Files by digest under `root` (finished ones) and `root/partial` (uploads under way)."""

    def __init__(self, root: Path, capacity: int = DEFAULT_CAPACITY) -> None:
        self.root = root
        self.partial = root / "partial"
        self.partial.mkdir(parents=True, exist_ok=True)
        self.capacity = capacity
        self._lock = threading.Lock()

    def has(self, digest: str) -> bool:
        return (self.root / _checked(digest)).is_file()

    def put(self, digest: str, size: int, offset: int, data: bytes) -> dict[str, int | bool]:
        """Append `data` at `offset` to the upload of file `digest` (`size` bytes in all);
        `{done, have}`: whether the file is stored, and how many bytes are in."""
        _checked(digest)
        if isinstance(size, bool) or not isinstance(size, int) or not 0 <= size <= MAX_BUNDLE_BYTES:
            raise BlobError(f"size must be 0 to {MAX_BUNDLE_BYTES} bytes")
        if len(data) > PIECE_BYTES:
            raise BlobError(f"a piece is at most {PIECE_BYTES} bytes")
        with self._lock:
            if self.has(digest):
                return {"done": True, "have": size}
            part = self.partial / digest
            have = part.stat().st_size if part.exists() else 0
            if offset == 0 and have:
                part.unlink()  # a restarted upload
                have = 0
            if offset != have:
                raise BlobError(f"upload of {digest[:12]}… holds {have} bytes; send offset {have}")
            if offset + len(data) > size:
                raise BlobError(f"piece ends at {offset + len(data)}, past the file's {size} bytes")
            if offset == 0 and self.used() + size > self.capacity:
                raise BlobError(
                    f"this ledger node's file store is full ({self.capacity} "
                    "bytes); free space in its data folder's blobs/"
                )
            with open(part, "ab") as handle:
                handle.write(data)
            have += len(data)
            if have < size:
                return {"done": False, "have": have}
            sha = hashlib.sha256()
            with open(part, "rb") as handle:
                for block in iter(lambda: handle.read(1 << 20), b""):
                    sha.update(block)
            if sha.hexdigest() != digest:
                part.unlink()
                raise BlobError(
                    f"the {size} bytes sent hash to {sha.hexdigest()[:12]}…, not to "
                    f"{digest[:12]}…; nothing was stored"
                )
            os.replace(part, self.root / digest)
            return {"done": True, "have": have}

    def get(self, digest: str, offset: int, length: int) -> tuple[bytes, int]:
        """Up to `length` (≤ PIECE_BYTES) bytes of file `digest` from `offset`, and its size."""
        path = self.root / _checked(digest)
        if not path.is_file():
            raise FileNotFoundError(f"this ledger node holds no file {digest[:12]}…")
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.seek(min(max(offset, 0), size))
            return handle.read(max(0, min(length, PIECE_BYTES))), size

    def used(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file())


def _checked(digest: object) -> str:
    if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
        raise BlobError("a file is named by its sha256: 64 lowercase hex characters")
    return digest


__all__ = ["PIECE_BYTES", "BlobError", "BlobStore"]
