"""Cutting a model's encoding into contiguous shards for a sharded merge.

Every site cuts the same way from the model's names, shapes and dtypes alone: the encoding
(header, then the tensors back to back, see codec/header.py) is split at chunk boundaries
(codec/chunks.py), as evenly as whole chunks allow, each cut moved forward to the next
element boundary so no value is split. A shard is then the header bytes it covers (if any)
and a run of elements from each tensor it covers.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import pairwise

from openswarm.codec.chunks import CHUNK_BYTES, chunk_count
from openswarm.codec.header import build_header
from openswarm.codec.tensors import TensorSpec


@dataclass(frozen=True)
class Piece:
    """Elements [first, stop) of tensor `tensor` (its index), `offset` bytes into a shard."""

    tensor: int
    first: int
    stop: int
    offset: int


@dataclass(frozen=True)
class Shard:
    """Bytes [start, end) of the encoding: `header` (the encoding's header bytes there, at
    the shard's beginning) and the tensors' `pieces` after it."""

    start: int
    end: int
    header: bytes
    pieces: tuple[Piece, ...]

    @property
    def size(self) -> int:
        return self.end - self.start


def cut(specs: Sequence[TensorSpec], count: int) -> list[Shard]:
    """The `count` shards of the encoding of tensors `specs` (in this order)."""
    if count < 1:
        raise ValueError(f"a model is cut into one shard at least, not {count}")
    header = build_header(specs)
    bounds, offset = [], len(header)
    for spec in specs:
        bounds.append((offset, offset + spec.nbytes))
        offset += spec.nbytes
    total, chunks = offset, chunk_count(offset)
    cuts = [0]
    for k in range(1, count):
        wanted = min(total, (k * chunks // count) * CHUNK_BYTES)
        cuts.append(max(cuts[-1], _element_boundary(wanted, specs, bounds)))
    cuts.append(total)
    return [_shard(a, b, header, specs, bounds) for a, b in pairwise(cuts)]


def _element_boundary(position: int, specs: Sequence[TensorSpec],
                      bounds: list[tuple[int, int]]) -> int:  # fmt: skip
    """`position`, or the next element boundary after it if it falls inside a value."""
    for spec, (begin, end) in zip(specs, bounds, strict=True):
        if begin < position < end:
            item = spec.dtype.itemsize
            return begin + -(-(position - begin) // item) * item
    return position


def _shard(start: int, end: int, header: bytes, specs: Sequence[TensorSpec],
           bounds: list[tuple[int, int]]) -> Shard:  # fmt: skip
    pieces = []
    for t, (spec, (begin, stop)) in enumerate(zip(specs, bounds, strict=True)):
        low, high = max(start, begin), min(end, stop)
        if low >= high:
            continue
        item = spec.dtype.itemsize
        pieces.append(Piece(t, (low - begin) // item, (high - begin) // item, low - start))
    return Shard(start, end, header[start : min(end, len(header))], tuple(pieces))


def chunk_span(shard: Shard) -> tuple[int, int]:
    """The chunks [first, stop) that hold `shard`'s bytes."""
    return shard.start // CHUNK_BYTES, -(-shard.end // CHUNK_BYTES)


__all__ = ["Piece", "Shard", "chunk_span", "cut"]
