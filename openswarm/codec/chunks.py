"""Per-chunk digests of an encoded model, and the Merkle root that pins them.

A model's bytes (what `Transport.pack` makes, before any zstd on the wire) are cut into
chunks of CHUNK_BYTES (the last one shorter). Each chunk's leaf is
``sha256(b"\\x00" || chunk)``; the root is the binary Merkle tree over the leaves in
order, an inner node being ``sha256(b"\\x01" || left || right)`` and an odd node at the end
of a level moving up unchanged. The root of no bytes is ``sha256(b"")``.

A site announces its snapshot's root with `ready`; a fetcher first receives the leaves,
checks they give that root, then checks every chunk against its leaf as it arrives, so a
bad chunk is caught where it is, not after the whole model has been read.
"""

from __future__ import annotations

import hashlib

from openswarm.codec.errors import CodecError

CHUNK_BYTES = 1 << 20
LEAF_BYTES = 32  # one sha256


def chunk_count(size: int) -> int:
    """How many chunks `size` bytes make."""
    return -(-size // CHUNK_BYTES)


def leaves(data: bytes | bytearray | memoryview) -> bytes:
    """The leaves of `data`'s chunks, concatenated (LEAF_BYTES each)."""
    view = memoryview(data).cast("B")
    return b"".join(
        leaf(view[start : start + CHUNK_BYTES]) for start in range(0, len(view), CHUNK_BYTES)
    )


def leaf(chunk: bytes | bytearray | memoryview) -> bytes:
    """The leaf of one chunk."""
    h = hashlib.sha256(b"\x00")
    h.update(chunk)
    return h.digest()


def root_of(leaf_bytes: bytes) -> str:
    """The Merkle root (hex) over concatenated leaves."""
    if len(leaf_bytes) % LEAF_BYTES:
        raise CodecError(f"{len(leaf_bytes)} bytes of leaves is not a multiple of {LEAF_BYTES}")
    level = [leaf_bytes[i : i + LEAF_BYTES] for i in range(0, len(leaf_bytes), LEAF_BYTES)]
    if not level:
        return hashlib.sha256(b"").hexdigest()
    while len(level) > 1:
        paired = [
            hashlib.sha256(b"\x01" + level[i] + level[i + 1]).digest()
            for i in range(0, len(level) - 1, 2)
        ]
        if len(level) % 2:
            paired.append(level[-1])
        level = paired
    return level[0].hex()


def chunk_root(data: bytes | bytearray | memoryview) -> str:
    """The Merkle root (hex) of `data`."""
    return root_of(leaves(data))


__all__ = ["CHUNK_BYTES", "LEAF_BYTES", "chunk_count", "chunk_root", "leaf", "leaves", "root_of"]
