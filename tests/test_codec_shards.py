"""Cutting a model's encoding into shards (openswarm.codec.shards)."""

from __future__ import annotations

from itertools import pairwise

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from openswarm.codec.chunks import CHUNK_BYTES
from openswarm.codec.dtypes import BY_CODE
from openswarm.codec.encode import encode
from openswarm.codec.shards import cut
from openswarm.codec.tensors import TensorSpec, structure

DTYPES = ["F32", "F64", "F16", "BOOL", "I64", "U8", "BF16"]


@settings(max_examples=150, deadline=None)
@given(
    st.lists(st.tuples(st.sampled_from(DTYPES), st.integers(0, 700_000)), min_size=1, max_size=6),
    st.integers(1, 9),
)
def test_shards_cover_the_encoding_back_to_back_and_split_no_value(
    tensors: list[tuple[str, int]], count: int
) -> None:
    specs = [TensorSpec(f"t{i}", BY_CODE[code], (n,)) for i, (code, n) in enumerate(tensors)]
    shards = cut(specs, count)
    assert len(shards) == count and shards[0].start == 0
    assert all(a.end == b.start for a, b in pairwise(shards))
    header = shards[0].header + b"".join(s.header for s in shards[1:])
    data_start = len(header)
    assert shards[-1].end == data_start + sum(s.nbytes for s in specs)
    covered = {i: 0 for i in range(len(specs))}
    for shard in shards:
        at = shard.start + len(shard.header)
        for piece in shard.pieces:
            spec = specs[piece.tensor]
            assert piece.first == covered[piece.tensor]  # in order, each value once
            assert shard.start + piece.offset == at
            at += (piece.stop - piece.first) * spec.dtype.itemsize
            covered[piece.tensor] = piece.stop
        assert at == shard.end  # nothing but header and whole values
    assert covered == {i: s.size for i, s in enumerate(specs)}


def test_a_float32_model_is_cut_on_chunk_boundaries() -> None:
    params = {"a": np.zeros(3 * CHUNK_BYTES // 4, np.float32),
              "b": np.zeros(5 * CHUNK_BYTES // 4 + 100, np.float32)}  # fmt: skip
    specs = list(structure(params).values())
    shards = cut(specs, 4)
    assert shards[-1].end == len(encode(params))  # nine chunks: 2, 2, 2 and 3 of them
    assert [s.start for s in shards] == [0, 2 * CHUNK_BYTES, 4 * CHUNK_BYTES, 6 * CHUNK_BYTES]
    assert len(shards[0].header) > 0 and shards[1].header == b""
    tiny = cut([TensorSpec("x", BY_CODE["F32"], (3,))], 3)  # more shards than chunks:
    assert [s.size for s in tiny][:2] == [0, 0]  # all in the last, the others empty
    with pytest.raises(ValueError, match="one shard at least"):
        cut(specs, 0)
