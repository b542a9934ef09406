"""Pseudo-random masks in Z_{2^64}, expanded from 32-byte seeds with ChaCha20.

The stream for (seed, label) is ChaCha20 keyed by the seed, with a 96-bit nonce taken from
sha256 of the label and a block counter starting at 0, read as little-endian uint64. Different
labels give independent streams. Masks are generated in 1 MiB chunks, so adding one to a total
never holds a second mask-sized array.
"""

from __future__ import annotations

import hashlib
import sys

import numpy as np
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms

from openswarm.secagg.errors import SecAggError

SEED_BYTES = 32
# A 32-bit ChaCha20 block counter from 0 covers 2**32 blocks of 64 bytes: 2**35 uint64.
MAX_COUNT = 2**35

_CHUNK = 1 << 17  # uint64 values per chunk (1 MiB)
_ZEROS = memoryview(bytes(_CHUNK * 8))
_LABEL_DOMAIN = b"openswarm-secagg-mask\0"


def _encryptor(seed: bytes, label: bytes, count: int, block: int = 0) -> CipherContext:
    if not isinstance(seed, bytes) or len(seed) != SEED_BYTES:
        raise SecAggError(f"a mask seed must be {SEED_BYTES} bytes: derive it with pair_seed")
    if not isinstance(label, bytes):
        raise SecAggError("a mask label must be bytes: name the round and the mask's role")
    if not 0 <= count <= MAX_COUNT - 8 * block:
        raise SecAggError(f"cannot expand {count} values: a mask holds 0..{MAX_COUNT} values")
    nonce = block.to_bytes(4, "little") + hashlib.sha256(_LABEL_DOMAIN + label).digest()[:12]
    return Cipher(algorithms.ChaCha20(seed, nonce), mode=None).encryptor()


def _fill(encryptor: CipherContext, out: np.ndarray) -> None:
    raw = memoryview(out).cast("B")
    for start in range(0, len(raw), len(_ZEROS)):
        size = min(len(_ZEROS), len(raw) - start)
        encryptor.update_into(_ZEROS[:size], raw[start : start + size])
    if sys.byteorder == "big":
        out.byteswap(inplace=True)


def expand(seed: bytes, count: int, label: bytes) -> np.ndarray:
    """The first `count` uint64 of the mask stream for (seed, label)."""
    encryptor = _encryptor(seed, label, count)
    out = np.empty(count, dtype=np.uint64)
    _fill(encryptor, out)
    return out


def add_mask(total: np.ndarray, seed: bytes, label: bytes, sign: int, offset: int = 0) -> None:
    """In place: total += sign * expand(seed, offset + len(total), label)[offset:] modulo
    2**64 (`offset`: where in the stream `total` begins, e.g. a shard of an update)."""
    if sign not in (1, -1):
        raise SecAggError(f"mask sign must be +1 or -1, got {sign!r}: use pair_sign")
    if (
        not isinstance(total, np.ndarray)
        or total.dtype != np.uint64
        or total.ndim != 1
        or not total.flags.c_contiguous
        or not total.flags.writeable
    ):
        raise SecAggError("masks are added to a writable 1-D uint64 array: pass an encoding")
    if not isinstance(offset, int) or offset < 0:
        raise SecAggError(f"a mask offset is a count of values ≥ 0, got {offset!r}")
    block, skip = divmod(offset, 8)  # 8 uint64 to a 64-byte ChaCha20 block
    encryptor = _encryptor(seed, label, skip + len(total), block)
    if skip:  # the rest of the block the offset falls in
        encryptor.update(bytes(8 * skip))
    chunk = np.empty(min(_CHUNK, len(total)), dtype=np.uint64)
    combine = np.add if sign == 1 else np.subtract
    for start in range(0, len(total), _CHUNK):
        part = total[start : start + _CHUNK]
        mask = chunk[: len(part)]
        _fill(encryptor, mask)
        combine(part, mask, out=part)


def pair_sign(own: str, other: str) -> int:
    """+1 if own < other else -1: the two masks of a pair then cancel in the sum."""
    if own == other:
        raise SecAggError(f"participant {own!r} has no pair mask with itself: skip its own name")
    return 1 if own < other else -1
