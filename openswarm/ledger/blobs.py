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
import time
from pathlib import Path

from openswarm.ledger.tasks import MAX_BUNDLE_BYTES

#: Largest piece of a file moved in one call (base64 in JSON stays well under a call's cap).
PIECE_BYTES = 512 << 10
#: Default space a node gives to stored files, all together.
DEFAULT_CAPACITY = 4 << 30
#: Uploads under way at once, and how long an untouched one is kept.
MAX_PARTIALS = 32
PARTIAL_EXPIRY_S = 3600.0
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
            part, declared = self.partial / digest, self.partial / f"{digest}.size"
            have = part.stat().st_size if part.exists() else 0
            if offset == 0:
                self._drop(digest)  # a restarted upload
                have = 0
                self._expire()
                self._reserve(size)
                declared.write_text(str(size))
            elif not declared.exists() or declared.read_text() != str(size):
                raise BlobError(f"no upload of {digest[:12]}… with {size} bytes is under way; "
                                "start it at offset 0")  # fmt: skip
            if offset != have:
                raise BlobError(f"upload of {digest[:12]}… holds {have} bytes; send offset {have}")
            if offset + len(data) > size:
                self._drop(digest)
                raise BlobError(f"piece ends at {offset + len(data)}, past the file's {size} bytes")
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
                self._drop(digest)
                raise BlobError(
                    f"the {size} bytes sent hash to {sha.hexdigest()[:12]}…, not to "
                    f"{digest[:12]}…; nothing was stored"
                )
            os.replace(part, self.root / digest)
            declared.unlink(missing_ok=True)
            return {"done": True, "have": have}

    def _reserve(self, size: int) -> None:
        """BlobError unless `size` more bytes fit: stored files count with their size, and
        uploads under way with the size they declared (so that many begun uploads cannot
        together outgrow the store); at most MAX_PARTIALS uploads at once."""
        declared = list(self.partial.glob("*.size"))
        if len(declared) >= MAX_PARTIALS:
            raise BlobError(
                f"{MAX_PARTIALS} uploads are under way on this ledger node already; finish "
                f"them, or wait {PARTIAL_EXPIRY_S:.0f} s for them to expire"
            )
        reserved = sum(int(p.read_text() or 0) for p in declared)
        stored = sum(p.stat().st_size for p in self.root.iterdir() if p.is_file())
        if stored + reserved + size > self.capacity:
            raise BlobError(f"this ledger node's file store is full ({self.capacity} bytes); "
                            "free space in its data folder's blobs/")  # fmt: skip

    def _expire(self) -> None:
        """Drop uploads untouched for PARTIAL_EXPIRY_S (begun and abandoned)."""
        now = time.time()
        for declared in self.partial.glob("*.size"):
            digest = declared.name.removesuffix(".size")
            part = self.partial / digest
            touched = (part if part.exists() else declared).stat().st_mtime
            if now - touched > PARTIAL_EXPIRY_S:
                self._drop(digest)

    def _drop(self, digest: str) -> None:
        (self.partial / digest).unlink(missing_ok=True)
        (self.partial / f"{digest}.size").unlink(missing_ok=True)

    def get(self, digest: str, offset: int, length: int) -> tuple[bytes, int]:
        """Up to `length` (≤ PIECE_BYTES) bytes of file `digest` from `offset`, and its size."""
        path = self.root / _checked(digest)
        if not path.is_file():
            raise FileNotFoundError(f"this ledger node holds no file {digest[:12]}…")
        size = path.stat().st_size
        with open(path, "rb") as handle:
            handle.seek(min(max(offset, 0), size))
            return handle.read(max(0, min(length, PIECE_BYTES))), size


def _checked(digest: object) -> str:
    if not isinstance(digest, str) or _DIGEST.fullmatch(digest) is None:
        raise BlobError("a file is named by its sha256: 64 lowercase hex characters")
    return digest


__all__ = ["PIECE_BYTES", "BlobError", "BlobStore"]
